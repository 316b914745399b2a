"""The server-wide work queue: bounded, first come first served, one job per session, faults contained."""

import threading
import time

import pytest

from core.jobs import CANCELLED, DONE, FAILED, JobQueue


def _sleeper(seconds: float, log: list, lock: threading.Lock, running: list):
    def fn(job):
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
            log.append(job.owner)
        time.sleep(seconds)
        job.report(0.5, "half way")
        with lock:
            running[0] -= 1
        return job.owner
    return fn


def test_bounded_fifo_and_every_job_runs_once():
    q = JobQueue(workers=2)
    log, lock, running = [], threading.Lock(), [0, 0]
    jobs = [q.submit(f"s{i}", "craft", _sleeper(0.05, log, lock, running)) for i in range(12)]
    assert all(q.wait(j, timeout=30) for j in jobs)
    assert [j.status for j in jobs] == [DONE] * 12 and [j.result for j in jobs] == [f"s{i}" for i in range(12)]
    assert running[1] == 2  # never more than the workers at once
    assert sorted(log) == sorted(f"s{i}" for i in range(12)) and len(log) == 12  # none lost, none twice
    assert log[:2] == ["s0", "s1"] or log[:2] == ["s1", "s0"]  # first come, first served
    assert [j.started for j in jobs] == sorted(j.started for j in jobs)


def test_one_unfinished_job_per_session_and_queue_positions():
    q = JobQueue(workers=1)
    gate = threading.Event()
    first = q.submit("a", "craft", lambda job: gate.wait(10))
    again = q.submit("a", "craft", lambda job: "never")  # pressing the button twice: same job
    assert again is first
    b = q.submit("b", "craft", lambda job: "b")
    c = q.submit("c", "craft", lambda job: "c")
    time.sleep(0.2)
    assert q.position(first) == 0 and q.position(b) == 1 and q.position(c) == 2
    gate.set()
    assert q.wait(c, timeout=10) and c.result == "c"
    assert q.submit("a", "craft", lambda job: "second").id != first.id  # a new job once the first is done


def test_failed_job_reports_to_its_owner_only_and_queue_goes_on():
    q = JobQueue(workers=1)
    bad = q.submit("a", "craft", lambda job: 1 / 0)
    good = q.submit("b", "craft", lambda job: "fine")
    assert q.wait(good, timeout=10)
    assert bad.status == FAILED and "ZeroDivisionError" in bad.error
    assert good.status == DONE and good.error is None


def test_cancel_queued_and_running_jobs():
    q = JobQueue(workers=1)
    started, stop = threading.Event(), threading.Event()

    def long(job):
        started.set()
        while True:
            job.report(0.1, "working")  # raises once cancelled
            time.sleep(0.01)

    running = q.submit("a", "long", long)
    queued = q.submit("b", "never", lambda job: pytest.fail("a cancelled job ran"))
    assert started.wait(10)
    q.cancel(queued)
    assert queued.status == CANCELLED
    q.cancel(running)
    assert q.wait(running, timeout=10) and running.status == CANCELLED
    after = q.submit("c", "next", lambda job: "ok")
    assert q.wait(after, timeout=10) and after.result == "ok"  # the slot was freed
    stop.set()


def test_closed_tab_frees_its_slot():
    gone = {"a"}
    q = JobQueue(workers=1, alive=lambda owner: owner not in gone)
    blocker = threading.Event()
    first = q.submit("b", "blocker", lambda job: blocker.wait(10))
    left = q.submit("a", "left", lambda job: pytest.fail("ran for a closed session"))
    blocker.set()
    assert q.wait(left, timeout=10) and left.status == CANCELLED and first.status == DONE
    gone.add("c")
    seen = threading.Event()

    def notices(job):
        seen.set()
        while True:
            job.report(0.2, "working")
            time.sleep(0.01)

    gone.discard("c")
    mid = q.submit("c", "mid-craft", notices)
    assert seen.wait(10)
    gone.add("c")  # the tab closes mid-craft
    assert q.wait(mid, timeout=10) and mid.status == CANCELLED


def test_hundred_rapid_submissions_drain_and_memory_is_bounded():
    q = JobQueue(workers=2, keep_s=0.0)
    count, lock = [0], threading.Lock()

    def bump(job):
        with lock:
            count[0] += 1

    jobs = [q.submit(f"s{i % 30}", "tiny", bump) for i in range(100)]  # 30 sessions pressing repeatedly
    for j in jobs:
        assert q.wait(j, timeout=30)
    assert count[0] == len({j.id for j in jobs})  # each distinct job ran exactly once
    q.submit("z", "tiny", bump)
    time.sleep(0.2)
    assert q.stats()["kept"] <= 1  # finished jobs are not kept forever
    for j in jobs:
        q.collect(j)


def test_workers_run_jobs_at_a_lower_priority_and_their_threads_inherit_it():
    """Linux: the worker thread's nice value is the queue's niceness, and so is a thread the job starts
    (the lab's per-model threads), while the server's own threads keep theirs."""
    import os
    import sys
    import threading

    import pytest

    from core.jobs import JobQueue

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread nice values are Linux's")
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def job(_job):
        seen = [os.getpriority(os.PRIO_PROCESS, threading.get_native_id())]
        t = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        t.start()
        t.join()
        return seen

    q = JobQueue(workers=1, niceness=max(10, base))
    j = q.submit("a", "nice", job)
    assert q.wait(j, timeout=30) and j.result == [max(10, base)] * 2
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
