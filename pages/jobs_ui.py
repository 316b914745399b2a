"""The queue's widgets: submit heavy work for this browser session, show its place, progress and a
cancel button, hand back its result (the queue itself is ``core.jobs``)."""

from __future__ import annotations

import time

import streamlit as st


def session_id() -> str:
    """This browser session's id: the owner of its queued jobs."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "local"


def _session_alive(owner: str) -> bool:
    """False once a browser session has closed (its queued job is dropped, its running one stops)."""
    from streamlit.runtime import Runtime

    if owner.startswith("submission:"):  # a red-team submission's scoring belongs to the round, not a tab
        return True
    try:
        return Runtime.instance().is_active_session(owner)
    except RuntimeError:  # no server runtime (AppTest, bare mode): sessions never close under us
        return True


@st.cache_resource(show_spinner=False)
def job_queue():
    """The server's one queue for heavy work, shared by every browser (``core.jobs``): as many
    crafts at once as there are cores; page switches and plots never wait behind it."""
    import os

    from core.jobs import JobQueue

    # crafts at nice 10: the pages' runs go first when a class keeps every core busy (core.jobs)
    return JobQueue(workers=max(1, os.cpu_count() or 1), alive=_session_alive, niceness=10)


def heavy_job(label: str, start: bool, work) -> object | None:
    """Queue ``work(job)`` for this session when ``start``; show its place in the queue, progress and a
    cancel button while it waits or runs; return its result once, on the run after it finished."""
    # one block here on every run, empty or not: when the status appeared only while a job ran, every
    # element under it moved down one place, and the browser drew each of them anew (the lab's shipped
    # example: seconds of a browser's CPU, taken from the job itself on a small machine)
    with st.container():
        return _heavy_job(label, start, work)


def _heavy_job(label: str, start: bool, work) -> object | None:
    from core.jobs import CANCELLED, DONE, FAILED

    q, owner = job_queue(), session_id()
    if start:
        job = q.submit(owner, label, work)
        if job.label != label:
            st.warning(f"Your {job.label} run is still going: cancel it (on its page) to start another.")
            return None
    job = q.latest(owner)
    if job is None or job.label != label:
        return None
    if job.status == DONE:
        q.collect(job)
        return job.result
    if job.status in (FAILED, CANCELLED):
        q.collect(job)
        if job.status == FAILED:
            st.error(f"The run failed and was stopped: {job.error}")
        else:
            st.info("Cancelled.")
        return None
    _job_status(label)
    return None


@st.fragment(run_every=1.0)
def _job_status(label: str) -> None:
    """Polls the session's job once a second without rerunning the page; reruns it when finished.
    (Twice a second saved the lab's first press 0.25 s on average, but with 30 students, 6 of them
    crafting, it doubled the polls and the loop mix's p95 went from 1.23 to 2.18 s: BENCHMARKS.)"""
    from core.jobs import FINISHED, QUEUED

    q = job_queue()
    job = q.latest(session_id())
    if job is None or job.label != label or job.status in FINISHED:
        st.rerun(scope="app")
    if job.status == QUEUED:
        ahead = q.position(job) - 1
        st.info(f"Waiting for a free worker: {ahead} run(s) ahead of yours, {q.workers} run at once. "
                f"Waiting {job.wait_s:.0f} s so far.")
    else:
        st.progress(job.progress, f"{job.message} ({time.monotonic() - job.started:.0f} s)")
    if st.button("Cancel", key=f"cancel_{label}"):
        q.cancel(job)
        st.rerun(scope="app")
