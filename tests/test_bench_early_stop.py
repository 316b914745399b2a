"""The early stop's paired check (bench/bench_early_stop.py) on two constructed experiment folders."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def _trial(folder: Path, model: str, trial: int, success: bool, control: bool, steps: int, target: int = 7) -> None:
    rec = {"model": model, "trial": trial, "attack": "bp", "n_poisons": 25, "setting": "transfer",
           "target_index": target, "base_class": 1, "base_indices": [3, 4], "seeds": {"victim": trial},
           "victim_name": "linear", "iterations_run": steps, "craft_s": steps / 20, "feature_distance": 1.0,
           "defences": {"none": {"success": success}},
           "victims": {"ncm": {"none": {"success": control}}}}
    (folder / "trials").mkdir(parents=True, exist_ok=True)
    (folder / "trials" / f"{model}__bp__k25__transfer__t{trial:04d}.json").write_text(json.dumps(rec))


def test_pairs_by_trial_counts_lost_and_gained_and_refuses_unpaired_folders(tmp_path):
    from bench_early_stop import compare

    full, early = tmp_path / "full", tmp_path / "early"
    outcomes = [(True, True), (True, False), (False, True), (False, False)]  # (full, early) of the own victim
    for t, (a, b) in enumerate(outcomes):
        _trial(full, "lgm", t, a, control=True, steps=1200)
        _trial(early, "lgm", t, b, control=True, steps=400 + t)
    _trial(full, "lgm", 9, True, control=True, steps=1200)  # no partner: left out
    result = compare(full, early)
    assert result["pairs"] == 4
    own = next(c for c in result["cells"] if c["victim"] == "linear")
    assert (own["full_successes"], own["early_successes"], own["lost"], own["gained"]) == (2, 2, 1, 1)
    assert own["mcnemar_p"] == 1.0
    ncm = next(c for c in result["cells"] if c["victim"] == "ncm")
    assert (ncm["full_successes"], ncm["lost"], ncm["gained"]) == (4, 0, 0)
    assert result["sides"]["early"]["iterations_run"] == [400, 401, 402, 403]
    _trial(early, "lgm", 0, True, control=True, steps=400, target=8)  # another target: not the same trial
    with pytest.raises(ValueError, match="not paired"):
        compare(full, early)
