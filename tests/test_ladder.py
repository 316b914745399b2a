"""The adaptive ladder: one rung per (stealth term, weight), one row per (model, filter, weight)."""

import json

import pytest

from core.attacks import stealth_for
from core.cli import main
from core.experiments import ExperimentConfig
from core.ladder import LadderConfig, ladder_rows, run_ladder
from core.stats import mcnemar_exact

from tests.test_experiments import tiny_checkpoints  # noqa: F401 - the module's tiny pair, reused


def _cfg(checkpoints, **changes) -> LadderConfig:
    exp = ExperimentConfig(models=checkpoints, attacks=("cm",), n_poisons=(2,), trials=2, iters=4, n_clean=120,
                           n_test=100, demo=True, seed=1, defences=changes.get("defences", ("none", "lgm", "centroid", "knn")),
                           bases_from_clean=True, judge=False)
    return LadderConfig(exp, changes.get("weights", (0.0, 1.0)))


def test_ladder_config_is_checked(tiny_checkpoints):  # noqa: F811
    with pytest.raises(ValueError, match="one attack"):
        LadderConfig(ExperimentConfig(models=tiny_checkpoints, attacks=("cm", "fc")))
    with pytest.raises(ValueError, match="no stealth term"):
        LadderConfig(ExperimentConfig(models=tiny_checkpoints, attacks=("bp",)))
    with pytest.raises(ValueError, match="include 0"):
        _cfg(tiny_checkpoints, weights=(1.0,))
    with pytest.raises(ValueError, match="at least one filter"):
        LadderConfig(ExperimentConfig(models=tiny_checkpoints, attacks=("cm",), defences=("none",)))
    # a term on another scale gets its own sweep
    own = LadderConfig(_cfg(tiny_checkpoints).experiment, (0.0, 1.0), {"likelihood": (0.0, 0.01)})
    assert set(own.rungs()) == {(None, 0.0), ("likelihood", 0.01), ("centroid", 1.0), ("neighbour", 1.0)}
    with pytest.raises(ValueError, match="unknown stealth"):
        LadderConfig(_cfg(tiny_checkpoints).experiment, (0.0, 1.0), {"hide": (0.0, 1.0)})
    # a filter no model can use gets no rung: the likelihood without an LGM model
    only_softmax = _cfg({"softmax": tiny_checkpoints["softmax"]})
    assert set(only_softmax.rungs()) == {(None, 0.0), ("centroid", 1.0), ("neighbour", 1.0)}
    rungs = _cfg(tiny_checkpoints).rungs()
    # the static rung is shared; each filter's own term gets one rung per nonzero weight
    assert set(rungs) == {(None, 0.0), ("likelihood", 1.0), ("centroid", 1.0), ("neighbour", 1.0)}
    assert rungs[("centroid", 1.0)][1].attack_settings["cm"] == {"adaptive_weight": 1.0, "stealth": "centroid"}
    # a rung crafts only against the models one of its filters can filter for: the likelihood, LGM only
    assert set(rungs[("likelihood", 1.0)][1].models) == {"lgm"}
    assert rungs[("likelihood", 1.0)][1].target_models == dict(tiny_checkpoints)  # the static rung's targets
    assert set(rungs[("centroid", 1.0)][1].models) == {"lgm", "softmax"}


@pytest.mark.slow
def test_ladder_writes_one_row_per_filter_and_weight_with_intervals(tiny_checkpoints, tmp_path):  # noqa: F811
    cfg = _cfg(tiny_checkpoints)
    rows = run_ladder(cfg, tmp_path, progress=False)
    stored = json.loads((tmp_path / "ladder.json").read_text())
    assert stored["rows"] == rows and stored["attack"] == "cm"
    keys = {(r["model"], r["filter"], r["weight"]) for r in rows}
    assert len(keys) == len(rows)  # one row per (model, filter, weight)
    # the likelihood filter only where the model has class Gaussians; the others on both models
    assert keys == {(m, f, w) for m in ("lgm", "softmax") for f in ("centroid", "knn") for w in (0.0, 1.0)} | \
        {("lgm", "lgm", w) for w in (0.0, 1.0)}
    for r in rows:
        for key in ("success_unfiltered", "success_filtered"):
            lo, hi = r[key]["ci95"]
            assert 0 <= lo <= r[key]["rate"] <= hi <= 1 and r["trials"] == 2
        lo, hi = r["flagged"]["ci95"]
        assert 0 <= lo <= r["flagged"]["share"] <= hi <= 1
    static = {(r["model"], r["filter"]): r for r in rows if r["weight"] == 0}
    # w = 0 is one experiment shared by every filter's curve: the same unfiltered outcome
    assert len({json.dumps(r["success_unfiltered"]) for (m, _), r in static.items() if m == "lgm"}) == 1
    for stealth in ("likelihood", "centroid", "neighbour"):
        for path in (tmp_path / stealth / "w1" / "trials").glob("*.json"):
            trial = json.loads(path.read_text())
            static_trial = json.loads((tmp_path / "static" / "trials" / path.name).read_text())
            assert trial["attack"] == "cm"
            # paired with the static rung: the same target and bases, though the likelihood rung
            # crafts against the LGM model alone (its targets once came from that model only)
            assert (trial["target_index"], trial["base_indices"]) == \
                (static_trial["target_index"], static_trial["base_indices"]), (stealth, path.name)
    assert ladder_rows(cfg, tmp_path) == rows  # resumable: rebuilt from the rungs' results
    # every filter behind every other statistic's adaptive rung, on the models that rung crafted against
    others = {(r["model"], r["filter"], r["stealth"], r["weight"]) for r in stored["others"]}
    assert len(others) == len(stored["others"])
    assert others == {(m, f, s, 1.0) for m in ("lgm", "softmax") for f in ("centroid", "knn")
                      for s in ("centroid", "neighbour") if stealth_for(f) != s} | \
        {("lgm", "centroid", "likelihood", 1.0), ("lgm", "knn", "likelihood", 1.0),
         ("lgm", "lgm", "centroid", 1.0), ("lgm", "lgm", "neighbour", 1.0)}
    for r in stored["others"] + [r for r in rows if r["weight"]]:  # paired with the static rung by trial
        v = r["vs_static"]
        assert r["trials"] == v["pairs"] == 2 and v["adaptive"] == r["success_filtered"]["successes"]
        assert v["static"] == static[(r["model"], r["filter"])]["success_filtered"]["successes"]
        folder = tmp_path / r["stealth"] / f"w{r['weight']:g}"
        mine, theirs = ([json.loads((f / "trials" / f"{r['model']}__cm__k2__transfer__t{t:04d}.json").read_text())
                         ["defences"][r["filter"]]["success"] for t in (0, 1)] for f in (folder, tmp_path / "static"))
        assert v["p"] == mcnemar_exact(mine, theirs)
        assert (v["only_adaptive"], v["only_static"]) == (sum(a and not b for a, b in zip(mine, theirs)),
                                                          sum(b and not a for a, b in zip(mine, theirs)))
    assert all("vs_static" not in r for r in rows if r["weight"] == 0)
    assert not list(tmp_path.rglob("gallery*"))  # no page pages through a rung's poisons: no gallery copies


def test_ladder_cli(tiny_checkpoints, tmp_path, capsys):  # noqa: F811
    cfg = _cfg({"lgm": tiny_checkpoints["lgm"]}, defences=("none", "lgm")).experiment
    raw = json.loads(json.dumps(cfg.__dict__, default=list))
    raw.update(weights=[0, 1], trials=1)
    (tmp_path / "ladder.json").write_text(json.dumps(raw))
    assert main(["ladder", "--config", str(tmp_path / "ladder.json"), "--out", str(tmp_path / "out"), "--quiet",
                 "--only", "likelihood:1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rungs"] == 2 and out["rows"] == 2
    # a rung the config does not have, or a malformed one: a message, nothing run
    for bad, why in (("centroid:1", "no rung"), ("likelihood", "STEALTH:W"), ("likelihood:-1", "STEALTH:W")):
        assert main(["ladder", "--config", str(tmp_path / "ladder.json"), "--out", str(tmp_path / "other"),
                     "--quiet", "--only", bad]) != 0
        assert why in capsys.readouterr().err
    assert not (tmp_path / "other" / "static").exists()


def test_ladder_figure_marks_the_static_attack_and_each_filter():
    from pages.figures import ladder_figure
    from tests.test_pages import _ladder_rows

    fig = ladder_figure({"rows": _ladder_rows()}, "lgm")
    assert [t.name for t in fig.data] == ["LGM likelihood (the paper)", "Distance to class centre"]
    for trace in fig.data:
        assert list(trace.marker.symbol) == ["circle-open", "circle", "circle"]  # w = 0 hollow
        assert list(trace.text) == ["", "w=1", "w=10"]  # the static point is the hollow one, unlabelled
        assert list(trace.customdata) == ["w=0", "w=1", "w=10"]  # its hover still names it
    assert fig.layout.shapes[0].y0 == 4 / 6  # the unfiltered static attack's rate, dotted
    # points that coincide share one label rather than printing over each other
    flat = [{**r, "flagged": {"share": 0.0, "ci95": [0, 0.1]}, "success_filtered": {"successes": 0, "rate": 0.0,
             "ci95": [0, 0.3]}} if r["weight"] else r for r in _ladder_rows() if r["filter"] == "lgm"]
    assert list(ladder_figure({"rows": flat}, "lgm").data[0].text) == ["", "w=1, 10", ""]
    # a filter keeps its colour on both models' charts (the softmax model has no LGM filter before it)
    soft = ladder_figure({"rows": _ladder_rows()}, "softmax")
    assert soft.data[0].name == fig.data[1].name and soft.data[0].marker.color == fig.data[1].marker.color


def _rival(model="lgm", defence="lgm", wins=4, flagged=0.04) -> dict:
    from tests.test_pages import _ladder_rows

    row = next(r for r in _ladder_rows() if r["model"] == model and r["weight"] == 1.0)
    return {**row, "filter": defence, "stealth": "centroid", "weight": 0.1, "flagged": {"share": flagged, "ci95": [0, 1]},
            "success_filtered": {"successes": wins, "rate": wins / 6, "ci95": [0, 1]}}


def test_a_rival_counts_only_when_it_beats_the_filters_whole_own_curve():
    from core.report import ladder_sentence, stronger_rival
    from pages.figures import ladder_figure
    from tests.test_pages import _ladder_rows

    rows = _ladder_rows()  # the LGM filter's own curve flips at most 2 of 6 behind it (w = 10)
    assert stronger_rival({"rows": rows, "others": [_rival(wins=2)]}, "lgm", "lgm") is None  # a tie is no rival
    assert stronger_rival({"rows": rows}, "lgm", "lgm") is None  # ladders written before rivals
    ladder = {"rows": rows, "others": [_rival(wins=3, flagged=0.2), _rival(wins=4), _rival(wins=4, flagged=0.5),
                                       _rival("softmax", "centroid", wins=6)]}
    best = stronger_rival(ladder, "lgm", "lgm")
    assert best["success_filtered"]["successes"] == 4 and best["flagged"]["share"] == 0.04  # most flips, then fewest flagged
    assert stronger_rival(ladder, "lgm", "centroid") is None  # rivals of one filter on one model only
    # more flips than the curve, but on easier targets: paired with the static attack it gained nothing
    easy = {**_rival(wins=5), "vs_static": {"pairs": 6, "adaptive": 5, "static": 5, "only_adaptive": 1,
                                             "only_static": 1, "p": 1.0}}
    assert stronger_rival({"rows": rows, "others": [easy]}, "lgm", "lgm") is None
    text = ladder_sentence(ladder, "lgm", "lgm")
    assert text.endswith("Stronger still: the attack aimed at Distance to class centre (w = 0.1) "
                         "leaves 4% flagged here and flips 4 of 6 behind this filter.")
    # a filter with no adaptive rung of its own: nothing before it to be "still" stronger than
    alone = {"rows": [r for r in rows if r["weight"] == 0], "others": ladder["others"]}
    assert "did better: the attack aimed at Distance to class centre" in ladder_sentence(alone, "lgm", "lgm")
    paired = {"pairs": 6, "adaptive": 4, "static": 0, "only_adaptive": 4, "only_static": 0, "p": 0.125}
    ladder["others"][1]["vs_static"] = paired
    assert ladder_sentence(ladder, "lgm", "lgm").endswith(
        "flips 4 of 6 behind this filter (against the static attack on the same 6 targets: 4 flipped only by this "
        "attack, 0 only by the static one, exact McNemar p = 0.12).")
    from core.report import significant_gain
    assert not significant_gain(ladder, "lgm", "lgm")  # 4 gained, none lost, but p = 0.12
    ladder["others"][1]["vs_static"] = {**paired, "p": 0.03}
    assert significant_gain(ladder, "lgm", "lgm") and not significant_gain(ladder, "lgm", "centroid")
    ladder["others"][1]["vs_static"] = {**paired, "only_adaptive": 0, "only_static": 4, "p": 0.03}
    assert not significant_gain(ladder, "lgm", "lgm")  # significantly fewer is no gain
    ladder["others"][1]["vs_static"] = paired
    fig = ladder_figure(ladder, "lgm")
    stars = [t for t in fig.data if t.marker.symbol == "star"]
    assert len(stars) == 1 and (stars[0].x[0], stars[0].y[0]) == (0.04, 4 / 6)
    assert stars[0].marker.color == fig.data[0].marker.color  # in the colour of the filter it beats
