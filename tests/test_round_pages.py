"""A red-team round through the dashboard (AppTest): the teacher signs in (a wrong passphrase is
refused) and opens a round; two students join and submit Poison lab runs; a second pending
submission is refused; the leaderboard orders them by the stated rule; the reveal names the
filter; a new server process (the store's cache cleared) reads the same round."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.attacks import settings_for
from core.checkpoints import load_checkpoint
from core.data import load_demo
from core.lab import lab_runs, run_lab_pair
from core.pipeline import correct_targets, plan_trial
from core.rounds import rank_key
from pages.common import shipped

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PASS = "class of 2026"


@pytest.fixture
def rounds_db(tmp_path, monkeypatch):
    from pages.rounds_ui import store

    monkeypatch.setenv("POISONLAB_ROUNDS_DB", str(tmp_path / "rounds.sqlite"))
    monkeypatch.setenv("POISONLAB_TEACHER_PASSPHRASE", PASS)
    store.clear()
    yield tmp_path / "rounds.sqlite"
    store.clear()


def _page(page: str, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["dataset"], at.session_state["space"] = "mnist", "2-D"
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    at.switch_page(page)
    return at.run()


def _lab(seed: int, target_class: int, base_class: int) -> dict:
    """What the Poison lab keeps in session state after a run (a real run, few steps)."""
    pair = shipped()["mnist"]["2-D"]
    ds = load_demo("mnist")
    models = {h: load_checkpoint(pair[h])[0] for h in ("softmax", "lgm")}
    targets = correct_targets(list(models.values()), ds)
    ti = int(np.intersect1d(np.flatnonzero(ds.y_test == target_class), targets)[0])
    plan = plan_trial(ds, seed, targets, n_poisons=3, n_clean=500, n_test=200, target_index=ti, base_class=base_class)
    runs = lab_runs(models, "fc", "mnist", trial_seed=seed, iters=20, record_every=20)
    results = run_lab_pair(runs, ds, plan)
    return {"results": results, "key": ("mnist", "2-D", tuple(sorted(pair.items()))), "base_class": base_class}


def _texts(at: AppTest) -> str:
    return " ".join(e.value for kind in ("markdown", "success", "info", "warning", "error", "caption")
                    for e in getattr(at, kind))


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


@pytest.mark.slow
def test_a_round_from_opening_to_reveal(rounds_db):
    from pages.jobs_ui import job_queue

    teacher = _page("pages/teacher.py")
    assert teacher.title[0].value == "Teacher" and not teacher.exception
    teacher.text_input[0].set_value("not it")
    _button(teacher, "Sign in").click().run()
    assert any("Wrong passphrase" in e.value for e in teacher.error)
    teacher.text_input[0].set_value(PASS)
    _button(teacher, "Sign in").click().run()
    for label, value in (("Attacked model", "lgm"), ("Victim retrained with", "warm"), ("Hidden filter", "lgm")):
        next(w for w in teacher.selectbox if w.label == label).set_value(value)
    _button(teacher, "Open the round").click().run()
    assert not teacher.exception, [e.value for e in teacher.exception]
    assert any(s.value.startswith("Round 1: open") for s in teacher.subheader)
    assert "revealed at the end" not in _texts(teacher) and "LGM likelihood" in _texts(teacher)

    # the queue's workers busy, so a submission stays pending while its student submits again
    release = threading.Event()
    q = job_queue()
    blockers = [q.submit(f"blocker-{i}", "block", lambda job: release.wait(120)) for i in range(q.workers)]
    students = {}
    try:
        for nick, lab in (("Ana", _lab(0, 3, 8)), ("Ben", _lab(1, 4, 9))):
            at = _page("pages/red_team.py", lab=lab)
            assert "revealed at the end" in _texts(at) and "LGM likelihood" not in _texts(at)
            at.text_input[0].set_value(nick)
            _button(at, "Join the round").click().run()
            assert f"You are **{nick}**" in _texts(at)
            _button(at, "Submit to the round").click().run()
            assert any("being judged" in s.value for s in at.success), _texts(at)
            if nick == "Ana":
                _button(at, "Submit to the round").click().run()
                assert any("still being scored" in e.value for e in at.error)
            students[nick] = at
        taken = _page("pages/red_team.py")
        taken.text_input[0].set_value("ana")
        _button(taken, "Join the round").click().run()
        assert any("taken" in e.value for e in taken.error)
    finally:
        release.set()
        for b in blockers:
            q.wait(b, timeout=120)

    from pages.rounds_ui import store

    deadline = time.time() + 240
    while store().pending() and time.time() < deadline:
        time.sleep(0.5)
    assert not store().pending(), "the submissions were not scored"
    at = students["Ana"].run()
    board = at.table[-1].value
    expected = sorted(store().leaderboard(1), key=lambda r: rank_key(r.score, r.submitted))
    assert list(board["nickname"]) == [r.nickname for r in expected] and set(board["nickname"]) == {"Ana", "Ben"}
    assert list(at.dataframe[0].value["number"]) == [1]  # Ana sees her own submission only (Ben's was number 2)

    _button(teacher.run(), "Reveal the hidden filter").click().run()
    at = students["Ben"].run()
    assert any("The hidden filter was: LGM likelihood" in m.value for m in at.markdown)

    # a server restart: a fresh store object on the same file, a fresh browser session
    store.clear()
    again = _page("pages/red_team.py")
    assert "Round 1" in _texts(again) and set(again.table[-1].value["nickname"]) == {"Ana", "Ben"}
    csv = store().export_csv(1)
    assert csv.count("\n") == 3 and ",lgm," in csv
    _button(teacher.run(), "End the round").click().run()
    assert any(s.value.startswith("Round 1: ended") for s in teacher.subheader)


def test_pages_without_a_round_or_a_passphrase(rounds_db, monkeypatch):
    at = _page("pages/red_team.py")
    assert not at.exception and any("No round has been opened" in i.value for i in at.info)
    monkeypatch.delenv("POISONLAB_TEACHER_PASSPHRASE")
    at = _page("pages/teacher.py")
    assert not at.exception and any("POISONLAB_TEACHER_PASSPHRASE" in i.value for i in at.info)
    assert not at.text_input  # no sign-in form without a passphrase
