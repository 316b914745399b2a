"""A server-wide queue for heavy work (crafting, retraining, live experiments), shared by every
browser session of one dashboard process.

A class of thirty on one laptop must not make page switches wait behind someone's craft, nor let
one student starve the rest. So:

- a fixed number of worker threads (a ``ThreadPoolExecutor``; the dashboard uses one per CPU core)
  run jobs first come, first served;
- each owner (a browser session) has at most one unfinished job: pressing the button again while
  waiting returns the same job, so no one queues ten crafts ahead of the others (fair share);
- a job reports progress through ``Job.report``, which is also where it stops when cancelled or when
  its owner has gone (a closed tab): cancellation takes effect at the job's next report;
- a job that raises is marked failed with its own message; the worker and the queue carry on;
- finished jobs are dropped once their owner has collected them or after ``keep_s`` seconds, so
  memory stays bounded by the number of sessions, not the number of crafts;
- the worker threads run at a lower CPU priority (``niceness``; Linux: per thread, and the threads
  a job starts inherit it), so that while crafts keep every core busy, the page runs of thirty
  students still get the CPU first; a craft takes the cores the pages leave.

Nothing here knows about Streamlit: the dashboard passes ``alive(owner)`` to tell which sessions
still exist.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class Cancelled(Exception):
    """Raised inside a job by ``Job.report`` once the job was cancelled or its owner left."""


@dataclass
class Job:
    """One unit of heavy work and what its owner's page shows about it."""

    id: int
    owner: str
    label: str
    fn: Callable[["Job"], Any] = field(repr=False)
    status: str = QUEUED
    progress: float = 0.0
    message: str = "waiting for a free worker"
    result: Any = field(default=None, repr=False)
    error: str | None = None
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _alive: Callable[[str], bool] = field(default=lambda owner: True, repr=False)

    def report(self, fraction: float, message: str) -> None:
        """Progress from inside the job; raises ``Cancelled`` when the job should stop."""
        if self._cancel.is_set() or not self._alive(self.owner):
            raise Cancelled(self.label)
        self.progress, self.message = min(max(float(fraction), 0.0), 1.0), message

    @property
    def wait_s(self) -> float:
        """Seconds spent queued (so far, if still queued)."""
        return (self.started or time.monotonic()) - self.submitted


class JobQueue:
    """Bounded-concurrency FIFO of ``Job`` with one unfinished job per owner."""

    def __init__(self, workers: int = 2, alive: Callable[[str], bool] | None = None, keep_s: float = 600.0,
                 niceness: int = 0) -> None:
        if workers < 1:
            raise ValueError("a queue needs at least one worker")
        self._niceness = int(niceness)
        self._alive = alive or (lambda owner: True)
        self._keep_s = keep_s
        self._pending: deque[Job] = deque()
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Condition()
        self._stats = {"submitted": 0, "done": 0, "failed": 0, "cancelled": 0, "max_wait_s": 0.0}
        self._workers = workers
        # concurrent.futures' threads are joined cleanly at interpreter exit (daemon threads that had
        # run torch were killed mid-teardown and aborted the process)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="poisonlab-worker")

    @property
    def workers(self) -> int:
        return self._workers

    def submit(self, owner: str, label: str, fn: Callable[[Job], Any]) -> Job:
        """Queue ``fn(job)`` for ``owner``; returns the owner's unfinished job instead if it has one."""
        with self._lock:
            current = self.current(owner)
            if current is not None:
                return current
            job = Job(next(self._ids), owner, label, fn, _alive=self._alive)
            self._jobs[job.id] = job
            self._pending.append(job)
            self._stats["submitted"] += 1
            self._pool.submit(self._run_next)  # one task per job: each runs the oldest job still waiting
            return job

    def current(self, owner: str) -> Job | None:
        """The owner's unfinished job, if any."""
        with self._lock:
            return next((j for j in self._jobs.values() if j.owner == owner and j.status not in FINISHED), None)

    def latest(self, owner: str) -> Job | None:
        """The owner's most recent job, finished or not (what its page shows)."""
        with self._lock:
            return max((j for j in self._jobs.values() if j.owner == owner), key=lambda j: j.id, default=None)

    def position(self, job: Job) -> int:
        """0 when running or finished, else how many jobs wait ahead of it plus one."""
        with self._lock:
            if job.status != QUEUED:
                return 0
            return next((i + 1 for i, j in enumerate(self._pending) if j.id == job.id), 0)

    def cancel(self, job: Job) -> None:
        """Stop ``job``: a queued one never runs; a running one stops at its next ``report``."""
        with self._lock:
            job._cancel.set()
            if job.status == QUEUED:
                self._pending = deque(j for j in self._pending if j.id != job.id)
                self._finish(job, CANCELLED)

    def collect(self, job: Job) -> None:
        """The owner has seen a finished job's result: forget it (memory is bounded per session)."""
        with self._lock:
            if job.status in FINISHED:
                self._jobs.pop(job.id, None)

    def stats(self) -> dict:
        with self._lock:
            return {**self._stats, "queued": len(self._pending), "workers": self.workers,
                    "running": sum(j.status == RUNNING for j in self._jobs.values()),
                    "kept": len(self._jobs)}

    def wait(self, job: Job, timeout: float | None = None) -> bool:
        """Block until ``job`` has finished (tests and the CLI; pages poll instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while job.status not in FINISHED:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._lock.wait(left if left is None else min(left, 0.5))
            return True

    # --- workers ---------------------------------------------------------------------------------------
    def _finish(self, job: Job, status: str, result: Any = None, error: str | None = None) -> None:
        job.status, job.result, job.error, job.finished = status, result, error, time.monotonic()
        self._stats[status] += 1
        self._lock.notify_all()

    def _next(self) -> Job | None:
        """The oldest waiting job whose owner is still here (others are cancelled), or None."""
        with self._lock:
            self._drop_stale()
            while self._pending:
                job = self._pending.popleft()
                if self._alive(job.owner) and not job._cancel.is_set():
                    job.status, job.started, job.message = RUNNING, time.monotonic(), "starting"
                    self._stats["max_wait_s"] = max(self._stats["max_wait_s"], job.wait_s)
                    return job
                self._finish(job, CANCELLED)  # its tab was closed while it waited
            return None

    def _drop_stale(self) -> None:
        now = time.monotonic()
        for job_id, job in list(self._jobs.items()):
            if job.status in FINISHED and (now - job.finished > self._keep_s or not self._alive(job.owner)):
                del self._jobs[job_id]

    def _lower_priority(self) -> None:
        """This worker thread (and what it starts) at ``niceness``: Linux's nice value is per thread."""
        if self._niceness <= 0 or not hasattr(os, "setpriority"):
            return
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, max(os.getpriority(os.PRIO_PROCESS, tid), self._niceness))
        except OSError:  # not permitted or not supported: the job runs at the server's priority
            pass

    def _run_next(self) -> None:
        self._lower_priority()
        job = self._next()
        if job is None:  # its job was cancelled while queued
            return
        try:
            result = job.fn(job)
        except Cancelled:
            with self._lock:
                self._finish(job, CANCELLED)
        except Exception as exc:  # noqa: BLE001 - a job's failure is its owner's message, not the server's
            with self._lock:
                self._finish(job, FAILED, error=f"{type(exc).__name__}: {exc}")
        else:
            with self._lock:
                job.progress, job.message = 1.0, "done"
                self._finish(job, DONE, result=result)
