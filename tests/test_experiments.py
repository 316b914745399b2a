"""A tiny experiment grid runs end to end, writes every output with the documented schema, resumes."""

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from core.attacks import ATTACKS
from core.checkpoints import save_checkpoint
from core.cli import main
from core.experiments import ExperimentConfig, run_experiment
from core.report import load_results, markdown_table
from core.models import Classifier, default_config
from core.train import TrainConfig, fit
from pages.figures import rate_figure


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory, mnist_demo):
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for head in ("softmax", "lgm"):
        torch.manual_seed(0)
        m = Classifier(default_config("mnist", head, 8, arch="resnet", depth=1, width=16))
        fit(m, mnist_demo.x_train, mnist_demo.y_train, TrainConfig(epochs=2, batch_size=64), progress=False)
        paths[head] = str(save_checkpoint(m, folder / f"{head}.pt", {}))
    return paths


def _check_gallery(folder, data, checkpoints):
    """The gallery holds every trial that made poisons, with the images and verdicts of its record."""
    from core.checkpoints import load_checkpoint
    from core.gallery import load_gallery
    from core.models import extract_features

    g = load_gallery(folder)
    records = {p.stem: json.loads(p.read_text()) for p in (folder / "trials").glob("*.json")}
    made = {k for k, r in records.items() if "skipped" not in r}
    assert {t["key"] for t in g.trials} == made and g.dataset == "mnist"
    for i, t in enumerate(g.trials):
        rec = records[t["key"]]
        target, bases, poisons = g.images(i)
        assert np.array_equal(poisons, np.load(folder / "trials" / f"{t['key']}.npz")["poisons"])
        assert np.array_equal(bases, data.x_train[rec["base_indices"]])
        assert np.array_equal(target, data.x_test[rec["target_index"]])
        for name, v in t["victims"].items():
            assert v["success"] == rec["defences"][name]["success"]
            if name != "none":
                assert np.mean(v["flagged"]) == pytest.approx(rec["defences"][name]["poisons_flagged"])
    model, _ = load_checkpoint(checkpoints["lgm"])
    _, _, poisons = g.images(0)
    assert np.allclose(g.features(0, "lgm")[2], extract_features(model, poisons).numpy(), atol=1e-5)


def _check_gallery_shards(folder, data, checkpoints):
    """A gallery too large for one file is split between trials and reads back the same; a smaller
    rebuild removes the files it no longer needs."""
    from core.gallery import build_gallery, gallery_files, load_gallery

    whole = load_gallery(folder)
    build_gallery(folder, data=data, shard_bytes=1)  # every trial a file of its own
    assert len(gallery_files(folder)) == len(whole.trials) > 1
    split = load_gallery(folder)
    assert split.trials == whole.trials and set(split.arrays) == set(whole.arrays)
    assert all(np.array_equal(split.arrays[k], whole.arrays[k]) for k in whole.arrays)
    _check_gallery(folder, data, checkpoints)
    build_gallery(folder, data=data)
    assert [p.name for p in gallery_files(folder)] == ["gallery.npz"]


@pytest.mark.slow
def test_tiny_experiment_end_to_end(tiny_checkpoints, tmp_path, mnist_demo):
    cfg = ExperimentConfig(models=tiny_checkpoints, attacks=("fc", "fc-adaptive"), n_poisons=(2,),
                           settings=("transfer", "end2end"), trials=2, iters=5, n_clean=120, n_test=100,
                           demo=True, seed=3)
    summary = run_experiment(cfg, tmp_path, progress=False)
    for name in ("results.json", "results.md", "config.json"):
        assert (tmp_path / name).is_file()
    assert summary["n_trials"] == 2 * 2 * 2 * 2
    cells = summary["cells"]
    lgm_cells = [c for c in cells if c["model"] == "lgm"]
    assert {c["defence"] for c in lgm_cells} == {"none", "lgm", "centroid", "knn", "spectral", "ac"}
    assert "lgm" not in {c["defence"] for c in cells if c["model"] == "softmax"}
    assert not [c for c in cells if c["model"] == "softmax" and c["attack"] == "fc-adaptive"]
    # the schema documented in README.md ("Experiment outputs")
    cell_keys = {"model", "victim", "primary", "attack", "n_poisons", "setting", "defence", "eps", "trials", "successes", "rate", "ci95",
                 "clean_label_rate", "clean_label_success", "clean_label_success_rate", "clean_label_success_ci95",
                 "clean_acc_after", "mean_l2", "mean_feature_distance"}
    for c in cells:
        assert set(c) == cell_keys | ({"auc", "poisons_flagged", "clean_flagged"} if c["defence"] != "none" else set())
        assert 0 <= c["ci95"][0] <= c["rate"] <= c["ci95"][1] <= 1
        assert 0 <= c["clean_label_rate"] <= 1 and 0 <= c["clean_label_success"] <= c["successes"]
        assert c["eps"] == 0.1  # the MNIST clean-label budget, since the config leaves eps unset
    written = json.loads((tmp_path / "results.json").read_text())
    assert set(written) == {"config", "n_trials", "cells", "wall_s_this_run", "torch"} and written["cells"] == cells
    assert load_results(tmp_path.parent)[tmp_path.name] == written  # what the Attack outcomes page reads
    record = json.loads(next((tmp_path / "trials").glob("lgm__fc__*t0001.json")).read_text())
    assert set(record) == {"model", "attack", "n_poisons", "setting", "trial", "seeds", "target_index",
                           "target_label", "base_class", "base_indices", "craft_s", "iterations_run",
                           "feature_distance", "l2", "linf", "eps", "judge", "clean_label", "defences", "victim_name",
                           "attack_settings"}
    assert record["attack_settings"]["iters"] == 5 and record["attack_settings"]["eps"] == record["eps"]
    assert record["seeds"] == {"trial_rng": [3, 1], "attack": 1, "victim": 1}  # every random choice is reproducible
    assert set(record["judge"]) == {"reference", "knn", "clean_label"} and len(record["judge"]["knn"]) == 2
    assert record["clean_label"] == all(record["judge"]["clean_label"])
    poisons = np.load(next((tmp_path / "trials").glob("lgm__fc__*t0001.npz")))["poisons"]
    assert poisons.dtype == np.uint8 and poisons.shape == (2, 28, 28, 1)  # the gallery's images
    assert set(record["defences"]["none"]) == {"success", "pred_after", "clean_acc_after", "poisons_kept"}
    assert set(record["defences"]["lgm"]) == {"success", "pred_after", "clean_acc_after", "poisons_kept", "auc",
                                              "threshold", "poisons_flagged", "clean_flagged", "poison_scores",
                                              "clean_score_quantiles", "rule", "poison_flags"}
    assert record["defences"]["lgm"]["rule"] == "fpr" and record["defences"]["knn"]["rule"] == "paper"
    skipped = json.loads(next((tmp_path / "trials").glob("softmax__fc-adaptive__*t0000.json")).read_text())
    assert "skipped" in skipped
    assert markdown_table(cells).count("\n") == len(cells) + 2
    _check_gallery(tmp_path, mnist_demo, tiny_checkpoints)
    _check_gallery_shards(tmp_path, mnist_demo, tiny_checkpoints)

    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "trials").iterdir()}
    again = run_experiment(cfg, tmp_path, progress=False)  # resumes: nothing recomputed
    assert again["cells"] == cells
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "trials").iterdir()}
    more = cfg.replace(trials=3, n_jobs=2)  # more trials: resumes, adds
    assert run_experiment(more, tmp_path, progress=False)["n_trials"] == 2 * 2 * 2 * 3
    with pytest.raises(ValueError, match="changed: iters"):  # stale trials must not stand in for new ones
        run_experiment(cfg.replace(iters=6), tmp_path, progress=False)


@pytest.mark.slow
def test_experiment_cli_and_bad_config(tiny_checkpoints, tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"models": {"softmax": tiny_checkpoints["softmax"]}, "attacks": ["bp"],
                               "defences": ["none", "knn"], "trials": 1, "iters": 3, "n_clean": 60,
                               "n_test": 50, "demo": True}))
    assert main(["experiment", "--config", str(cfg), "--out", str(tmp_path / "o"), "--quiet",
                 "--n-jobs", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["n_trials"] == 1
    cfg.write_text(json.dumps({"models": {"a": "x.pt"}, "attacks": ["nope"]}))
    assert main(["experiment", "--config", str(cfg), "--out", str(tmp_path / "o2")]) == 1
    assert "unknown attack" in capsys.readouterr().err
    cfg.write_text(json.dumps({"models": {"a": "x.pt"}, "trials": "ten"}))
    assert main(["experiment", "--config", str(cfg), "--out", str(tmp_path / "o3")]) == 1
    assert "'trials' must be int" in capsys.readouterr().err
    cfg.write_text("{not json")
    assert main(["experiment", "--config", str(cfg), "--out", str(tmp_path / "o4")]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    cfg.write_text(json.dumps({"models": {"a": "x.pt"}, "judge": "a person"}))
    assert main(["experiment", "--config", str(cfg), "--out", str(tmp_path / "o5")]) == 1
    assert "judge must be true, false or one of" in capsys.readouterr().err
    assert main(["rejudge", "--experiment", str(tmp_path / "o"), "--judge", "reference", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_trials"] == 1 and set(out["successes_with_rejected_poisons_dropped"]) == {"softmax/warm/bp/k5"}


def _row(model, defence, k, rate):
    return {"model": model, "attack": "fc", "n_poisons": k, "setting": "transfer", "defence": defence,
            "rate": rate, "ci95": [max(0.0, rate - 0.1), min(1.0, rate + 0.1)]}


def test_rate_figure_bars_for_one_poison_count_lines_for_several():
    one = [_row("softmax", "none", 5, 0.9), _row("lgm", "lgm", 5, 0.0)]
    fig = rate_figure(one)
    assert [t.type for t in fig.data] == ["bar", "scatter"]  # the bars, then their counts as text
    assert list(fig.data[0].y) == ["Softmax, no filter", "LGM + LGM likelihood (the paper)"]  # top to bottom
    assert list(fig.data[0].x) == pytest.approx([0.9, 0.0]) and list(fig.data[1].text) == ["90%", "0%"]
    assert list(fig.data[0].error_x.array) == pytest.approx([0.1, 0.1])
    whisker_ends = [r["ci95"][1] for r in one]
    assert all(x > end for x, end in zip(fig.data[1].x, whisker_ends))  # the count clears its whisker
    assert list(fig.data[1].y) == list(fig.data[0].y)
    counted = rate_figure([{**one[1], "successes": 0, "trials": 100}])
    assert list(counted.data[1].text) == ["0 of 100"]  # a zero is printed, not an empty chart
    several = one + [_row("softmax", "none", 10, 1.0)]
    fig = rate_figure(several)
    assert [t.type for t in fig.data] == ["scatter", "scatter"]
    assert fig.data[1].name == "Softmax, no filter"
    assert list(fig.data[1].x) == [5, 10] and list(fig.data[1].error_y.array) == pytest.approx([0.1, 0.0])


def test_shipped_experiments_resolve_their_models_from_any_working_folder(tmp_path, monkeypatch):
    """results.json names checkpoints relative to the repository; a missing one excludes the
    experiment instead of crashing Attack outcomes and Defences (``core.checkpoints.locate``)."""
    from core.report import experiment_models

    monkeypatch.chdir(tmp_path)
    res = {"config": {"models": {"softmax": "checkpoints/mnist_softmax_d64.pt", "lgm": "checkpoints/mnist_lgm_d64.pt"}}}
    assert [c["feat_dim"] for c in experiment_models(res)] == [64, 64]
    assert experiment_models({"config": {"models": {"softmax": "checkpoints/no_such_model.pt"}}}) is None



def test_shipped_experiments_resume_under_the_nested_attack_settings(tmp_path):
    """Every shipped experiment was written with one flat key per attack knob; read today, each is the
    same experiment as its bench/configs file (so `--trials 100` resumes it instead of refusing)."""
    from core.experiments import _check_resume

    root = Path(__file__).resolve().parent.parent
    for folder in sorted((root / "checkpoints" / "experiments").iterdir()):
        bench = root / "bench" / "configs" / f"{folder.name}.json"
        if not (folder / "config.json").is_file() or not bench.is_file():
            continue
        stored = json.loads((folder / "config.json").read_text())
        old = ExperimentConfig.from_dict(stored)
        assert not {"restarts", "beta0", "opacity", "adaptive_weight"} & set(asdict(old))
        for attack, knobs in old.attack_settings.items():
            assert set(knobs) <= set(ATTACKS[attack].settings.knobs())
        if stored.get("adaptive_weight", 1.0) != 1.0 and "fc-adaptive" in old.attacks:
            assert old.attack_settings["fc-adaptive"]["adaptive_weight"] == stored["adaptive_weight"]
        _check_resume(ExperimentConfig.from_file(bench).replace(trials=old.trials), folder)  # raises if not


def test_attack_settings_are_checked_against_the_registry():
    models = {"lgm": "x.pt"}
    with pytest.raises(ValueError, match="not a setting"):
        ExperimentConfig(models=models, attacks=("cp",), attack_settings={"cp": {"beta0": 1.0}})
    with pytest.raises(ValueError, match="whole experiment"):
        ExperimentConfig(models=models, attacks=("fc",), attack_settings={"fc": {"eps": 0.1}})
    # an attack's own iters overrides the experiment's, and is kept even at the attack's default
    assert ExperimentConfig(models=models, attacks=("fc", "bp"),
                            attack_settings={"fc": {"iters": 120}, "bp": {"iters": 1000}}).attack_settings == {
        "bp": {"iters": 1000}, "fc": {"iters": 120}}
    with pytest.raises(ValueError, match="unknown attack"):
        ExperimentConfig(models=models, attack_settings={"zz": {}})
    cfg = ExperimentConfig(models=models, attacks=("fc",), attack_settings={"fc": {"restarts": 1, "lr": 0.2}})
    assert cfg.attack_settings == {"fc": {"lr": 0.2}}  # defaults dropped: equal configs compare equal


def test_an_augmenting_victim_is_named_apart_from_its_plain_control():
    """The own victim's cells carry "-aug" when it trains on crops and flips, so a plain control of
    the same head can sit beside it (the augmentation pairs); a control may not take the own name."""
    models = {"lgm": "x.pt"}
    cfg = ExperimentConfig(models=models, victim={"head": "linear", "augment": True},
                           victims={"linear": {"head": "linear"}})
    assert cfg.primary_name == "linear-aug" and set(cfg.control_recipes(0)) == {"linear"}
    assert ExperimentConfig(models=models, victim={"head": "linear"}).primary_name == "linear"
    with pytest.raises(ValueError, match="names the experiment's own victim"):
        ExperimentConfig(models=models, victim={"head": "linear"}, victims={"linear": {"head": "linear"}})


@pytest.mark.slow
def test_control_victims_share_the_poisons_and_the_filters(tiny_checkpoints, tmp_path):
    """Head controls: one crafting, several victims; each control has its own cells and records."""
    cfg = ExperimentConfig(models=tiny_checkpoints, attacks=("fc",), n_poisons=(3,), trials=2, iters=5,
                           n_clean=100, n_test=50, demo=True, seed=1, defences=("none", "centroid"),
                           bases_from_clean=True,
                           victims={"ncm": {"head": "ncm"}, "bench": {"head": "linear", "epochs": 2}})
    summary = run_experiment(cfg, tmp_path, progress=False)
    rows = summary["cells"]
    assert {r["victim"] for r in rows} == {"warm", "ncm", "bench"}
    for path in (tmp_path / "trials").glob("*.json"):
        record = json.loads(path.read_text())
        assert set(record["victims"]) == {"ncm", "bench"}
        assert all(set(v) == {"none", "centroid"} for v in record["victims"].values())
    assert "/ ncm" in (tmp_path / "results.md").read_text()  # the table tells the victims apart
    for model in tiny_checkpoints:
        mine = {(r["victim"], r["defence"]): r for r in rows if r["model"] == model}
        assert mine[("ncm", "centroid")]["poisons_flagged"] == mine[("warm", "centroid")]["poisons_flagged"]
        assert all(mine[(v, d)]["trials"] == 2 for v in ("warm", "ncm", "bench") for d in ("none", "centroid"))
    # a replay on the stored poisons, without crafting, gives the same outcomes as the run itself
    from core.experiments import replay_experiment
    from core.report import load_trials, outcomes

    replay = replay_experiment(tmp_path, tmp_path / "replay", {"ncm": {"head": "ncm"},
                                                               "bench": {"head": "linear", "epochs": 2}},
                               defences=("none", "centroid"), progress=False)
    assert replay["n_trials"] == 4
    ran, again = load_trials(tmp_path), load_trials(tmp_path / "replay")
    for model in tiny_checkpoints:
        for d in ("none", "centroid"):
            assert outcomes(again, model, None, d) == outcomes(ran, model, "ncm", d)
            assert outcomes(again, model, "bench", d) == outcomes(ran, model, "bench", d)
    for a, b in zip(sorted(ran, key=lambda r: (r["model"], r["trial"])), sorted(again, key=lambda r: (r["model"], r["trial"]))):
        assert a["defences"]["centroid"]["poison_scores"] == pytest.approx(b["defences"]["centroid"]["poison_scores"])
        assert a["judge"] == b["judge"] and b["replay_of"] == str(tmp_path)
    with pytest.raises(ValueError, match="different replay"):
        replay_experiment(tmp_path, tmp_path / "replay", {"ncm": {"head": "ncm"}}, progress=False)
    with pytest.raises(ValueError, match="needs a head"):
        cfg.replace(victims={"x": {"head": "magic"}})
    with pytest.raises(ValueError, match="not a setting"):
        cfg.replace(victims={"x": {"head": "ncm", "lr": 0.1}})


@pytest.fixture(scope="module")
def split_checkpoints(tmp_path_factory, mnist_demo):
    """Tiny models pretrained on one half of MNIST's classes (``data.class_split``), as
    ``train-suite --split-seed 0`` writes them."""
    from core.data import class_split

    pretrain, victim = class_split("mnist", 0)
    data = mnist_demo.restrict(pretrain)
    folder = tmp_path_factory.mktemp("split")
    paths = {}
    for head in ("softmax", "lgm"):
        torch.manual_seed(0)
        m = Classifier(default_config("mnist", head, 8, arch="resnet", depth=1, width=16, n_classes=len(pretrain)))
        fit(m, data.x_train, data.y_train, TrainConfig(epochs=1, batch_size=64), progress=False)
        meta = {"class_split": {"seed": 0, "pretrain_classes": list(pretrain), "victim_classes": list(victim)}}
        paths[head] = str(save_checkpoint(m, folder / f"mnist_split0_{head}.pt", meta))
    return paths, victim


@pytest.mark.slow
def test_new_classes_experiment_draws_from_the_victims_classes(split_checkpoints, tmp_path, mnist_demo):
    """A model pretrained on other classes: trials draw targets, bases and clean images from the
    victim's classes only, victims get a new head with those classes, the warm-started head is
    refused, and the LGM filter is fitted on the pool (its own Gaussians are other classes')."""
    paths, victim_classes = split_checkpoints
    cfg = ExperimentConfig(models=paths, attacks=("bp",), n_poisons=(3,), trials=2, iters=5, n_clean=100,
                           n_test=50, demo=True, seed=0, defences=("none", "lgm", "centroid"),
                           bases_from_clean=True, victim={"head": "linear", "epochs": 2},
                           victims={"gaussian": {"head": "gaussian"}, "lab": {"head": "warm"}})
    summary = run_experiment(cfg, tmp_path, progress=False)
    names = tuple(mnist_demo.classes[c] for c in victim_classes)
    victim_data = mnist_demo.restrict(victim_classes)
    records = [json.loads(p.read_text()) for p in (tmp_path / "trials").glob("*.json")]
    assert len(records) == 4
    for r in records:
        assert r["victim_classes"] == list(names) and r["victim_name"] == "linear"
        assert set(r["victims"]) == {"gaussian"}  # the warm head starts from other classes: skipped
        assert victim_data.y_test[r["target_index"]] == r["target_label"] != r["base_class"]
        assert set(victim_data.y_train[r["base_indices"]]) == {r["base_class"]}
        assert 0 <= r["defences"]["none"]["pred_after"] < len(victim_classes)
    primary = [c for c in summary["cells"] if c["primary"]]
    assert {c["victim"] for c in primary} == {"linear"}
    assert {c["defence"] for c in primary if c["model"] == "lgm"} == {"none", "lgm", "centroid"}
    assert all(0.0 <= c["auc"] <= 1.0 for c in primary if c["defence"] == "lgm")
    from core.report import primary_cells

    assert primary_cells(summary) == primary
    with pytest.raises(ValueError, match="other classes"):
        run_experiment(cfg.replace(victim={"head": "warm"}, victims={}), tmp_path / "warm", progress=False)


def test_likelihood_stealth_is_refused_where_the_models_gaussians_are_other_classes(split_checkpoints):
    """A model pretrained on other classes: its own Gaussians describe those, so the likelihood
    stealth term would hide poisons from the wrong classes; the trial says so and suggests the
    fitted term, which runs."""
    from core.experiments import candidate_targets, experiment_trial

    paths, _ = split_checkpoints
    cfg = ExperimentConfig(models={"lgm": paths["lgm"]}, attacks=("cm",), n_poisons=(2,), trials=1, iters=2,
                           n_clean=100, n_test=50, demo=True, seed=0, defences=("none", "lgm"),
                           bases_from_clean=True, victim={"head": "ncm"},
                           attack_settings={"cm": {"adaptive_weight": 1.0}})
    record, poisons = experiment_trial(cfg, candidate_targets(cfg), "lgm", "cm", 2, "transfer", 0)
    assert poisons is None and "fitted-likelihood" in record["skipped"]
    fitted = cfg.replace(attack_settings={"cm": {"adaptive_weight": 1.0, "stealth": "fitted-likelihood"}})
    record, poisons = experiment_trial(fitted, candidate_targets(fitted), "lgm", "cm", 2, "transfer", 0)
    assert poisons is not None and record["attack"] == "cm"
    # the class size the attack assumed: the victim's base class, poisons included (they take their bases' places)
    assert record["attack_settings"]["class_size"] == 100 // 5 and record["attack_settings"]["stealth"] == "fitted-likelihood"


@pytest.mark.slow
def test_rejudge_drops_what_the_judge_rejects_and_retrains(tiny_checkpoints, tmp_path, mnist_demo, monkeypatch):
    import core.experiments as ex
    from core.experiments import rejudge_experiment
    from core.judge import load_judge

    cfg = ExperimentConfig(models=tiny_checkpoints, attacks=("fc",), n_poisons=(3,), trials=2, iters=5, n_clean=120,
                           n_test=100, demo=True, seed=3, defences=("none", "centroid"),
                           victims={"ncm": {"head": "ncm"}})
    run_experiment(cfg, tmp_path, progress=False)
    summary = rejudge_experiment(tmp_path, "reference", progress=False, labelled_out=tmp_path / "labelled")
    assert json.loads((tmp_path / "rejudged" / "reference.json").read_text()) == json.loads(json.dumps(summary))
    lab = tmp_path / "labelled"  # the labelled data sets as an experiment of their own
    assert json.loads((lab / "results.json").read_text())["labelled"]["from"] == tmp_path.name
    assert ExperimentConfig.from_file(lab / "config.json").judge == "reference"
    for key, t in summary["trials"].items():
        rec = json.loads((lab / "trials" / f"{key}.json").read_text())
        assert rec["labelled"]["kept"] == t["kept"] == len(rec["base_indices"]) and rec["n_poisons"] == 3
        if t["kept"]:
            assert len(np.load(lab / "trials" / f"{key}.npz")["poisons"]) == t["kept"] and all(rec["judge"]["clean_label"])
    if any(t["kept"] for t in summary["trials"].values()):
        _check_gallery(lab, mnist_demo, tiny_checkpoints)
    judge = load_judge(mnist_demo)
    for key, t in summary["trials"].items():
        rec = json.loads((tmp_path / "trials" / f"{key}.json").read_text())
        poisons = np.load(tmp_path / "trials" / f"{key}.npz")["poisons"]
        fresh = judge.verdict(poisons, rec["base_class"], exclude=rec["base_indices"])
        assert t["clean_label"] == fresh.clean_label.tolist() and t["kept"] == int(fresh.clean_label.sum())
        assert t["original_success"] == rec["defences"]["none"]["success"]
    assert summary["n_trials"] == 4 and {c["victim"] for c in summary["cells"]} == {"warm", "ncm"}
    assert {c["defence"] for c in summary["cells"]} == {"none", "centroid"}

    class Rejects:  # a labeller who relabels the poisons ``which`` picks
        def __init__(self, which):
            self.which = which

        def verdict(self, images, claimed, exclude=None):
            v = judge.verdict(images, claimed, exclude)
            return type(v)(v.reference, v.knn, v.clean_label & ~self.which(len(images)))

    real = ex._judge  # the plans still draw their bases with the experiment's own judge (True)

    def with_judge(which):
        monkeypatch.setattr(ex, "_judge", lambda *a: Rejects(which) if a[-1] == "reference" else real(*a))

    with_judge(lambda n: np.arange(n) == 0)  # the first poison of every trial rejected
    part = rejudge_experiment(tmp_path, "reference", progress=False, labelled_out=tmp_path / "labelled")
    assert all(t["kept"] <= 2 and not t["clean_label"][0] for t in part["trials"].values())
    for key, t in part["trials"].items():
        rec = json.loads((lab / "trials" / f"{key}.json").read_text())
        crafted = np.load(tmp_path / "trials" / f"{key}.npz")["poisons"]
        kept = np.load(lab / "trials" / f"{key}.npz")["poisons"]
        assert np.array_equal(kept, crafted[np.asarray(t["clean_label"])])  # the kept ones, in order
        orig = json.loads((tmp_path / "trials" / f"{key}.json").read_text())["base_indices"]
        assert rec["base_indices"] == [b for b, ok in zip(orig, t["clean_label"]) if ok]
    _check_gallery(lab, mnist_demo, tiny_checkpoints)  # images and features sliced by the kept count

    with_judge(lambda n: np.ones(n, bool))  # every poison relabelled: nothing of the attack is left
    none = rejudge_experiment(tmp_path, "reference", progress=False, labelled_out=tmp_path / "labelled")
    assert all(t["kept"] == 0 for t in none["trials"].values())
    assert {c["defence"] for c in none["cells"]} == {"none"} and all(c["trials"] == 2 for c in none["cells"])
    for key in none["trials"]:
        rec = json.loads((lab / "trials" / f"{key}.json").read_text())
        assert rec["no_poison_kept"] and rec["defences"]["none"]["poisons_kept"] == 0
        assert 0 < rec["defences"]["none"]["clean_acc_after"] <= 1  # a victim really retrained, on clean data
        assert not (lab / "trials" / f"{key}.npz").exists()
    assert not (lab / "gallery.json").exists()  # nothing to show, and no stale gallery left
    with pytest.raises(ValueError, match="holds an experiment of its own"):
        rejudge_experiment(tmp_path, "reference", progress=False, labelled_out=tmp_path)
    with pytest.raises(ValueError, match="labelled data set made from"):
        rejudge_experiment(lab, "reference", progress=False)
    with pytest.raises(ValueError, match="labelled data set made from"):
        run_experiment(cfg, lab, progress=False)
    with pytest.raises(ValueError, match="unknown judge"):
        rejudge_experiment(tmp_path, "a person", progress=False)


def test_a_trial_whose_bases_cannot_be_drawn_is_skipped_not_fatal(tiny_checkpoints, tmp_path):
    """50 poisons among a class's 250 images, of which the judges pass fewer than 50, once stopped a
    whole grid at that trial; such a trial is now recorded as skipped, with why, for every model."""
    cfg = ExperimentConfig(models=tiny_checkpoints, attacks=("fc",), n_poisons=(5,), trials=2, iters=2, n_clean=30,
                           n_test=50, demo=True, bases_from_clean=True, defences=("none",))
    summary = run_experiment(cfg, tmp_path, progress=False)
    records = [json.loads(p.read_text()) for p in (tmp_path / "trials").glob("*.json")]
    assert len(records) == 4 and all("skipped" in r and "training images of class" in r["skipped"] for r in records)
    assert summary["cells"] == []
