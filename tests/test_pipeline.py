"""The one trial pipeline: seeded plans that never take "the first N", and one outcome everywhere."""

import numpy as np
import pytest
import torch

from core.attacks import settings_for
from core.checkpoints import save_checkpoint
from core.data import Dataset
from core.experiments import ExperimentConfig, candidate_targets, experiment_trial
from core.judge import load_judge
from core.lab import run_lab
from core.models import Classifier, default_config
from core.data import stratified_sample
from core.pipeline import correct_targets, plan_trial, run_trial
from core.train import TrainConfig, fit


def _sorted_by_class(ds: Dataset) -> Dataset:
    """The shared packs are stored sorted by class: make the sample look like them."""
    tr, te = np.argsort(ds.y_train, kind="stable"), np.argsort(ds.y_test, kind="stable")
    return Dataset(ds.name, ds.x_train[tr], ds.y_train[tr], ds.x_test[te], ds.y_test[te], ds.classes, ds.source)


def test_plan_is_seeded_stratified_and_disjoint(mnist_demo):
    ds = _sorted_by_class(mnist_demo)
    candidates = np.arange(0, len(ds.y_test), 3)
    a = plan_trial(ds, (0, 5), candidates, n_poisons=4, n_clean=200, n_test=100)
    b = plan_trial(ds, (0, 5), candidates, n_poisons=4, n_clean=200, n_test=100)
    assert a.to_dict() == b.to_dict() and np.array_equal(a.clean_indices, b.clean_indices)
    assert np.array_equal(np.bincount(ds.y_test[a.test_indices]), np.full(10, 10))  # every class, not zeros
    assert np.array_equal(np.bincount(ds.y_train[a.clean_indices]), np.full(10, 20))
    assert a.target_index in candidates and a.target_index not in a.test_indices
    assert a.base_class != a.target_label and np.all(ds.y_train[a.base_indices] == a.base_class)
    assert not set(a.base_indices) & set(a.clean_indices)
    others = {plan_trial(ds, (0, t), candidates, n_poisons=4, n_clean=200, n_test=100).target_label
              for t in range(30)}
    assert len(others) >= 8  # targets come from every class


def test_stratified_sample_spreads_the_remainder():
    labels = np.repeat(np.arange(3), 10)
    idx = stratified_sample(labels, 7, np.random.default_rng(0))
    assert sorted(np.bincount(labels[idx]).tolist()) == [2, 2, 3]


@pytest.fixture(scope="module")
def pair(mnist_demo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    paths, models = {}, {}
    for head in ("softmax", "lgm"):
        torch.manual_seed(0)
        m = Classifier(default_config("mnist", head, 8, arch="resnet", depth=1, width=16))
        fit(m, mnist_demo.x_train, mnist_demo.y_train, TrainConfig(epochs=2, batch_size=64), progress=False)
        paths[head] = str(save_checkpoint(m, folder / f"{head}.pt", {}))
        models[head] = m.eval()
    return paths, models


@pytest.mark.slow
def test_lab_and_experiment_runner_agree(pair, mnist_demo):
    """The dashboard's lab and the experiment runner are one pipeline: same seed, same outcome."""
    paths, models = pair
    cfg = ExperimentConfig(models=paths, attacks=("fc",), defences=("none", "lgm", "centroid"), trials=1, iters=30,
                           n_clean=150, n_test=100, demo=True, seed=7)
    targets = candidate_targets(cfg)
    assert np.array_equal(targets["mnist"], correct_targets(list(models.values()), mnist_demo))
    judge = load_judge(mnist_demo)
    for head, own in (("lgm", "lgm"), ("softmax", "centroid")):
        record, poisons = experiment_trial(cfg, targets, head, "fc", 3, "transfer", 0)
        plan = plan_trial(mnist_demo, (7, 0), targets["mnist"], n_poisons=3, n_clean=150, n_test=100, judge=judge)
        knobs = settings_for("fc", "mnist", iters=30, seed=0, record_every=30)
        lab = run_lab(models[head], mnist_demo, plan, "fc", knobs, judge=judge)
        assert record["target_index"] == plan.target_index and record["base_indices"] == plan.base_indices.tolist()
        assert np.array_equal(np.round(lab.poisons.poisons * 255).astype(np.uint8), poisons)
        for name in ("none", own):
            assert lab.victims[name].success == record["defences"][name]["success"]
            assert lab.victims[name].outcome.pred_after == record["defences"][name]["pred_after"]
            assert lab.victims[name].outcome.clean_acc_after == pytest.approx(record["defences"][name]["clean_acc_after"])
        assert record["judge"]["clean_label"] == lab.verdict.clean_label.tolist()


@pytest.mark.slow
def test_uploaded_target_needs_its_image(pair, mnist_demo):
    _, models = pair
    plan = plan_trial(mnist_demo, 1, np.arange(50), n_poisons=2, n_clean=100, n_test=50, base_class=3,
                      external_label=5)
    assert plan.target_index == -1 and plan.target_label == 5
    with pytest.raises(ValueError, match="outside image"):
        run_trial(models["softmax"], mnist_demo, plan, "fc", settings_for("fc", "mnist", iters=5))
    img = mnist_demo.x_test[np.flatnonzero(mnist_demo.y_test == 5)[:1]]
    r = run_trial(models["softmax"], mnist_demo, plan, "fc", settings_for("fc", "mnist", iters=5), target=img)
    assert r.victims["none"].outcome.target_label == 5


def _same_up_to_rounding(a, b) -> bool:
    """Equal records, floats to 1e-5 relative: labels, counts and decisions exactly."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_up_to_rounding(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_up_to_rounding(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and not isinstance(a, bool):
        return bool(np.isclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True))
    return a == b


def test_a_feature_bank_changes_nothing_but_the_time(tiny_lgm, mnist_demo):
    """The lab passes the model's features of the whole sample (``FeatureBank``) instead of running the
    clean and test images through the network: every decision must be the same. The features agree to
    float rounding only: on AVX-512 machines a convolution's last digit depends on the batch it ran in."""
    from core.pipeline import FeatureBank

    plan = plan_trial(mnist_demo, 3, np.arange(len(mnist_demo.y_test)), n_poisons=2, n_clean=120, n_test=60)
    knobs = settings_for("fc", "mnist", iters=5, seed=0)
    bank = FeatureBank.compute(tiny_lgm, mnist_demo)
    runs = [run_lab(tiny_lgm, mnist_demo, plan, "fc", knobs, bank=b) for b in (None, bank)]
    assert np.allclose(runs[0].clean_features, runs[1].clean_features, rtol=1e-5, atol=1e-6)
    for name in ("none", "lgm"):
        a, b = (r.victims[name] for r in runs)
        assert _same_up_to_rounding(a.outcome.to_dict(), b.outcome.to_dict())
        assert _same_up_to_rounding(a.detection, b.detection)


def test_feature_bank_cache_returns_the_computed_features_and_recomputes_a_bad_file(tmp_path, tiny_lgm, mnist_demo):
    from core.pipeline import FeatureBank

    data = mnist_demo.restrict((0, 1))
    fresh = FeatureBank.compute(tiny_lgm, data)
    first = FeatureBank.cached(tiny_lgm, data, tmp_path, "abc")
    (path,) = tmp_path.glob("bank_*.npz")
    again = FeatureBank.cached(tiny_lgm, data, tmp_path, "abc")
    assert np.allclose(first.train, fresh.train) and np.array_equal(again.test, first.test)
    assert len(list(tmp_path.glob("bank_*.npz"))) == 1
    FeatureBank.cached(tiny_lgm, data, tmp_path, "other weights")  # another key: another file
    assert len(list(tmp_path.glob("bank_*.npz"))) == 2
    path.write_bytes(b"not an npz")
    assert np.allclose(FeatureBank.cached(tiny_lgm, data, tmp_path, "abc").train, fresh.train)
    path.write_bytes(path.read_bytes()[:100])  # a truncated file (an interrupted write elsewhere)
    assert np.allclose(FeatureBank.cached(tiny_lgm, data, tmp_path, "abc").train, fresh.train)


def test_lab_default_round_trip_and_refusals(tmp_path):
    """The lab's measured first press: saved, read back, matched to the sidebar's pair; a corrupt
    file or an absurd entry gives no default instead of a broken page."""
    from core.lab import LabDefault, lab_default, save_lab_default

    d = LabDefault(dataset="mnist", space="2-D", models={"softmax": "mnist_softmax_d2.pt", "lgm": "mnist_lgm_d2.pt"},
                   target_index=521, base_class=4, attack="fc", n_poisons=5, iters=100, why="a rule")
    save_lab_default(d, tmp_path)
    assert lab_default("mnist", "2-D", tmp_path) == d
    assert lab_default("mnist", "high-d", tmp_path) is None
    assert d.fits({"softmax": "checkpoints/mnist_softmax_d2.pt", "lgm": "/x/mnist_lgm_d2.pt"})
    assert not d.fits({"softmax": "checkpoints/mnist_softmax_d64.pt", "lgm": "checkpoints/mnist_lgm_d2.pt"})
    with pytest.raises(ValueError):
        LabDefault(**{**d.__dict__, "n_poisons": 10_000})
    with pytest.raises(ValueError):
        LabDefault(**{**d.__dict__, "attack": "rm -rf"})
    (tmp_path / "lab_defaults.json").write_text('{"mnist/2-D": {"dataset": "mnist", "iters": -1}}')
    assert lab_default("mnist", "2-D", tmp_path) is None
    (tmp_path / "lab_defaults.json").write_text("not json")
    assert lab_default("mnist", "2-D", tmp_path) is None


def test_shipped_lab_defaults_are_valid_and_fit_shipped_pairs():
    import json

    from core.checkpoints import CHECKPOINT_DIR
    from core.lab import lab_default
    from pages.common import shipped

    entries = json.loads((CHECKPOINT_DIR / "lab_defaults.json").read_text())
    assert entries
    for key in entries:
        dataset, space = key.split("/")
        d = lab_default(dataset, space)
        assert d is not None and d.fits(shipped()[dataset][space])
        assert d.measured["softmax"]["poisoned"] and not d.measured["lgm"]["poisoned"]
        assert not any(d.measured["noise_control"][h]["poisoned"] for h in ("softmax", "lgm"))
