"""Page runs in turn (pages/admission.py): at most ``slots`` at once, in arrival order, never blocked for long."""

import threading
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pages.admission import PAGE_RUNS, Turns

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _run_together(turns: Turns, n: int, hold_s: float, gap_s: float = 0.01) -> list[tuple[str, int, float]]:
    events: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def page(i: int) -> None:
        time.sleep(gap_s * i)  # arrive in order 0, 1, 2, ...
        with turns.turn():
            with lock:
                events.append(("in", i, time.monotonic()))
            time.sleep(hold_s)
            with lock:
                events.append(("out", i, time.monotonic()))

    threads = [threading.Thread(target=page, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return events


def _most_inside(events: list[tuple[str, int, float]]) -> int:
    inside = most = 0
    for kind, _, _ in sorted(events, key=lambda e: (e[2], e[0] == "in")):  # an exit before an entry at a tie
        inside += 1 if kind == "in" else -1
        most = max(most, inside)
    return most


def test_one_slot_serves_runs_one_after_another_in_arrival_order():
    events = _run_together(Turns(slots=1, wait_s=5.0), n=4, hold_s=0.4, gap_s=0.05)  # all wait behind 0
    assert _most_inside(events) == 1
    assert [i for kind, i, _ in events if kind == "in"] == [0, 1, 2, 3]


def test_two_slots_let_two_in_at_once_and_no_more():
    events = _run_together(Turns(slots=2, wait_s=5.0), n=6, hold_s=0.1)
    assert _most_inside(events) == 2


def test_a_run_that_waited_too_long_goes_ahead_without_a_slot():
    turns = Turns(slots=1, wait_s=0.05)
    with turns.turn() as first:
        t0 = time.monotonic()
        with turns.turn() as second:
            waited = time.monotonic() - t0
    assert first is True and second is False
    assert 0.04 <= waited < 1.0
    assert turns.waited_out == 1
    with turns.turn() as third:  # the slot the first held is free again; the second never took one
        assert third is True


def test_the_slot_is_given_back_when_the_run_raises():
    turns = Turns(slots=1, wait_s=0.05)
    with pytest.raises(RuntimeError):
        with turns.turn():
            raise RuntimeError("a page run stopped by a rerun")
    with turns.turn() as got:
        assert got is True
    assert turns.waited_out == 0


@pytest.mark.parametrize("slots, wait_s", [(0, 1.0), (1, -1.0)])
def test_absurd_settings_are_refused(slots, wait_s):
    with pytest.raises(ValueError):
        Turns(slots=slots, wait_s=wait_s)


def test_app_runs_its_page_inside_a_turn_and_gives_it_back(monkeypatch):
    seen = []
    real = PAGE_RUNS.turn

    def spy():
        seen.append(True)
        return real()

    monkeypatch.setattr(PAGE_RUNS, "turn", spy)
    monkeypatch.setenv("POISONLAB_WARM_UP", "0")
    at = AppTest.from_file(APP, default_timeout=240).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Poison Lab"
    assert seen, "app.py did not take a turn"
    assert PAGE_RUNS._sem._value == PAGE_RUNS.slots  # nothing left holding a slot
