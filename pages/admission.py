"""Page runs in turn: a class that clicks together is served a few at a time, not all at once.

Streamlit runs every browser's script in its own thread, and page scripts are Python under one
interpreter lock, which the threads share round-robin (every 5 ms). When thirty students press
"Next" in the same second, thirty page runs of ~0.07 s each then all finish together after ~2 s
(processor sharing: everyone waits for everyone), and, since each acts again a few seconds after
its page settled, they arrive together again at the next page: the bunch never breaks up. Served
in turn, the first finish after 0.07 s, the last after ~2 s, and the next arrivals come spread out
by the order they were served in, so the bunch dissolves after one page. Two slots rather than one:
a single slow run (a cache filled on a first visit) then delays nobody, and with arrivals at random
(a class not in step) short runs are not stuck behind a long one. Measured, 30 students, 6 crafting
(BENCHMARKS "Classroom load"): p95 in step 2.0-2.1 s with every run at once, 0.6-0.7 s with one
slot, 1.1-1.3 s with two; at random 1.0 s at once, 1.3-1.6 s with one slot, 1.0-1.4 s with two.

A run waits for a slot at most ``wait_s``; after that it goes ahead anyway, so a slow run (a cache
being filled on a first visit) can delay the others by that much, never block them. Fragment
reruns (the lab's one-second status poll) do not pass through here: they are cheap.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

SLOTS = max(1, int(os.environ.get("POISONLAB_PAGE_SLOTS", "2") or 2))
WAIT_S = 2.0


class Turns:
    """At most ``slots`` holders at a time, in order of arrival; a holder that waited ``wait_s`` goes ahead."""

    def __init__(self, slots: int = SLOTS, wait_s: float = WAIT_S) -> None:
        if slots < 1 or wait_s < 0:
            raise ValueError(f"slots must be >= 1 and wait_s >= 0, got {slots}, {wait_s}")
        self.slots, self.wait_s = slots, wait_s
        self._sem = threading.Semaphore(slots)
        self.waited_out = 0  # runs that went ahead without a slot (how often wait_s was too short)

    @contextlib.contextmanager
    def turn(self) -> Iterator[bool]:
        """Hold a slot for the block; yields whether one was had (False: waited ``wait_s`` and went ahead)."""
        got = self._sem.acquire(timeout=self.wait_s)
        if not got:
            self.waited_out += 1
        try:
            yield got
        finally:
            if got:
                self._sem.release()


PAGE_RUNS = Turns()  # one per server process: app.py's module-level imports persist across reruns
