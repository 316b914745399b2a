"""Red-team rounds (core.rounds): rules, submissions checked against the data, scores from the trial
pipeline, the SQLite store (restart, one pending submission, nicknames), the ranking rule, CSV."""

import csv
import io

import numpy as np
import pytest

from core.attacks import get_attack, settings_for
from core.pipeline import evaluate_poisons, plan_trial
from core.rounds import (RANKING_RULE, RoundError, RoundRules, RoundStore, Score, Submission, check_submission,
                         passphrase_ok, rank_key, round_plan, score_submission)
from core.victim import Retraining


def _rules(**over) -> RoundRules:
    kw = dict(dataset="mnist", space="2-D", model="lgm", model_path="x.pt", head_type="lgm", victim_head="warm",
              defence="lgm", max_level=64, max_poisons=5, minutes=10, seed=3)
    return RoundRules(**{**kw, **over})


def _submission(data, k=3, base_class=8, target_class=3, level=10, seed=0) -> Submission:
    rng = np.random.default_rng(seed)
    bases = rng.choice(np.flatnonzero(data.y_train == base_class), k, replace=False)
    target = int(np.flatnonzero(data.y_test == target_class)[0])
    noise = rng.integers(-level, level + 1, data.x_train[bases].shape)
    imgs = np.clip(data.x_train[bases].astype(int) + noise, 0, 255).astype(np.uint8)
    return Submission(imgs, bases.astype(np.int64), base_class, target, "fc")


def test_rules_refuse_what_cannot_run():
    with pytest.raises(RoundError, match="does not apply"):
        _rules(model="softmax", head_type="softmax", defence="lgm")
    with pytest.raises(RoundError, match="unknown defence"):
        _rules(defence="magic")
    with pytest.raises(RoundError, match="max_level"):
        _rules(max_level=0)
    with pytest.raises(RoundError, match="max_poisons"):
        _rules(max_poisons=10**6)
    assert "defence" not in _rules().public()


def test_passphrase():
    assert passphrase_ok("open sesame", "open sesame")
    assert not passphrase_ok("open", "open sesame")
    assert not passphrase_ok("", "")  # no passphrase set: nobody is the teacher


def test_submission_npz_round_trip_and_hostile_files(mnist_demo):
    sub = _submission(mnist_demo)
    back = Submission.from_npz(sub.to_npz())
    assert np.array_equal(back.poisons, sub.poisons) and np.array_equal(back.base_indices, sub.base_indices)
    assert (back.base_class, back.target_index, back.attack) == (8, sub.target_index, "fc")
    with pytest.raises(RoundError, match="Cannot read"):
        Submission.from_npz(b"not a zip at all")
    with pytest.raises(RoundError, match="at most"):
        Submission.from_npz(b"0" * (5 * 2**20))
    buf = io.BytesIO()
    np.savez(buf, poisons=np.zeros((1, 28, 28, 1), np.uint8))
    with pytest.raises(RoundError, match="missing"):
        Submission.from_npz(buf.getvalue())
    buf = io.BytesIO()  # a zip bomb: 4 kB that would inflate to 100 MB is refused before it is inflated
    np.savez_compressed(buf, poisons=np.zeros((100, 1000, 1000, 1), np.uint8), base_indices=np.arange(1),
                        base_class=1, target_index=1)
    assert len(buf.getvalue()) < 2**20
    with pytest.raises(RoundError, match="unpack"):
        Submission.from_npz(buf.getvalue())
    buf = io.BytesIO()  # a header claiming a huge array in a tiny file: refused before numpy allocates it
    with __import__("zipfile").ZipFile(buf, "w") as zf:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (10**6, 1000, 1000, 1)})
        zf.writestr("poisons.npy", header.getvalue())
    with pytest.raises(RoundError, match="claims an array"):
        Submission.from_npz(buf.getvalue())
    buf = io.BytesIO()  # a class that is not an integer
    np.savez(buf, poisons=np.zeros((1, 28, 28, 1), np.uint8), base_indices=np.arange(1), base_class=np.str_("abc"),
             target_index=1)
    with pytest.raises(RoundError, match="integers"):
        Submission.from_npz(buf.getvalue())
    buf = io.BytesIO()  # an attack name that is a spreadsheet formula becomes "unknown"
    np.savez(buf, poisons=np.zeros((1, 28, 28, 1), np.uint8), base_indices=np.arange(1), base_class=1,
             target_index=1, attack=np.str_("=HYPERLINK(1)"))
    assert Submission.from_npz(buf.getvalue()).attack == "unknown"
    buf = io.BytesIO()  # an object array would need pickle: refused, never unpickled
    np.savez(buf, poisons=np.array([object()], dtype=object), base_indices=np.arange(1), base_class=1, target_index=1)
    with pytest.raises(RoundError):
        Submission.from_npz(buf.getvalue())


def test_check_submission_enforces_the_rules(mnist_demo):
    rules = _rules()
    sub = _submission(mnist_demo, level=10)
    check_submission(rules, mnist_demo, sub)
    with pytest.raises(RoundError, match="budget is 5"):
        check_submission(_rules(max_level=5), mnist_demo, sub)
    with pytest.raises(RoundError, match="1 to 2 poisons"):
        check_submission(_rules(max_poisons=2), mnist_demo, sub)
    wrong_class = Submission(sub.poisons, sub.base_indices, 7, sub.target_index, "fc")
    with pytest.raises(RoundError, match="base class"):
        check_submission(rules, mnist_demo, wrong_class)
    with pytest.raises(RoundError, match="outside"):
        check_submission(rules, mnist_demo, Submission(sub.poisons, sub.base_indices + 10**7, 8, sub.target_index, "fc"))
    with pytest.raises(RoundError, match="images are"):
        check_submission(rules, mnist_demo, Submission(np.zeros((3, 32, 32, 3), np.uint8), sub.base_indices, 8,
                                                       sub.target_index, "fc"))
    with pytest.raises(RoundError, match="classify correctly"):
        check_submission(rules, mnist_demo, sub, candidates=np.array([sub.target_index + 1]))


def test_score_is_the_pipelines_verdict(tiny_lgm, mnist_demo):
    """A round's score is evaluate_poisons on the round's clean set: the same filter flags and victim outcome."""
    rules = _rules()
    data = mnist_demo
    target = int(np.flatnonzero(data.y_test == 3)[0])
    plan = plan_trial(data, 5, np.array([target]), n_poisons=3, n_clean=500, n_test=100, target_index=target, base_class=8)
    p = get_attack("fc").craft(tiny_lgm, data.x_train[plan.base_indices], data.x_test[target:target + 1],
                               np.full(3, 8), 3, settings_for("fc", "mnist", iters=30, eps=60 / 255))
    sub = Submission.from_lab(plan, p, "fc")
    score = score_submission(tiny_lgm, data, rules, sub)
    assert score.n_poisons == 3 and score.level <= 60 and score.clean_label == 3  # no judge: counted clean-label
    ref = evaluate_poisons(tiny_lgm, data, round_plan(rules, data, sub), "fc",
                           p.__class__(**{**p.__dict__, "poisons": sub.poisons.astype(np.float32) / 255}),
                           defences=("lgm",), victim=Retraining(seed=rules.seed)).victims["lgm"]
    assert score.caught == 3 - ref.poisons_kept and score.fooled == ref.success
    assert score.clean_acc == pytest.approx(ref.outcome.clean_acc_after)
    plan_r = round_plan(rules, data, sub)
    assert not set(plan_r.clean_indices) & set(sub.base_indices) and sub.target_index not in plan_r.test_indices


def test_store_round_students_submissions_and_restart(tmp_path, mnist_demo):
    db = tmp_path / "rounds.sqlite"
    store = RoundStore(db)
    rnd = store.open_round(_rules(), now=1000.0)
    with pytest.raises(RoundError, match="already open"):
        store.open_round(_rules())
    ana = store.join(rnd.id, "Ana", now=1001)
    with pytest.raises(RoundError, match="taken"):
        store.join(rnd.id, "ana")
    with pytest.raises(RoundError, match="nickname"):
        store.join(rnd.id, "<script>")
    ben = store.join(rnd.id, "Ben 2")
    assert store.student(rnd.id, ana) == "Ana" and store.student(rnd.id, "forged") is None
    with pytest.raises(RoundError, match="nickname first"):
        store.submit(rnd.id, "forged", _submission(mnist_demo), mnist_demo, now=1002)
    s1 = store.submit(rnd.id, ana, _submission(mnist_demo), mnist_demo, now=1002)
    with pytest.raises(RoundError, match="still being scored"):
        store.submit(rnd.id, ana, _submission(mnist_demo, seed=1), mnist_demo, now=1003)
    with pytest.raises(RoundError, match="budget"):  # a bad one stores nothing
        store.submit(rnd.id, ben, _submission(mnist_demo, level=200), mnist_demo, now=1003)
    assert len(store.submissions(rnd.id)) == 1
    # a new server process: the same file, the same round, the pending submission still to score
    again = RoundStore(db)
    assert again.current().id == rnd.id and again.pending() == [s1]
    assert np.array_equal(again.payload(s1).poisons, _submission(mnist_demo).poisons)
    again.record(s1, Score(3, 10, 3, 0, True, 8, 0.9))
    assert again.pending() == [] and again.submissions(rnd.id, "Ana")[0].score.fooled
    s2 = again.submit(rnd.id, ana, _submission(mnist_demo, seed=1), mnist_demo, now=1004)
    again.record(s2, error="boom")
    assert again.submissions(rnd.id)[1].status == "failed"
    with pytest.raises(RoundError, match="no longer"):
        again.submit(rnd.id, ben, _submission(mnist_demo), mnist_demo, now=1000.0 + 601)
    again.end(rnd.id)
    assert again.current().ended is not None and again.current().revealed
    assert again.open_round(_rules()).id != rnd.id


def test_leaderboard_follows_the_stated_rule(tmp_path, mnist_demo):
    store = RoundStore(tmp_path / "r.sqlite")
    rnd = store.open_round(_rules(), now=0.0)
    scores = {  # nickname: [(score, submitted)]
        "caught": [Score(3, 8, 3, 1, True, 8, 0.9)],
        "clean-win": [Score(5, 8, 5, 0, True, 8, 0.9)],
        "small-win": [Score(5, 4, 5, 0, True, 8, 0.9)],
        "dirty": [Score(2, 2, 1, 0, True, 8, 0.9)],  # not all clean-label: no success
        "miss": [Score(1, 1, 1, 0, False, 3, 0.9), Score(1, 9, 1, 0, True, 8, 0.9)],  # best of the two counts
    }
    t = 1.0
    for name, rows in scores.items():
        token = store.join(rnd.id, name)
        for sc in rows:
            sid = store.submit(rnd.id, token, _submission(mnist_demo, k=1), mnist_demo, now=t)
            store.record(sid, sc)
            t += 1
    order = [r.nickname for r in store.leaderboard(rnd.id)]
    assert order == ["small-win", "clean-win", "miss", "caught", "dirty"]
    assert rank_key(Score(1, 1, 1, 0, True, 8, 0.9), 5) < rank_key(Score(1, 1, 1, 0, True, 8, 0.9), 6)
    assert "clean-label" in RANKING_RULE
    rows = list(csv.DictReader(io.StringIO(store.export_csv(rnd.id))))
    assert len(rows) == 6 and {r["defence"] for r in rows} == {"lgm"}
    assert {r["nickname"] for r in rows} == set(scores)
