"""REPRODUCTION section 10's table script (bench/filter_table.py) on a constructed experiment folder."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def _trial(folder: Path, model: str, trial: int, none: bool, filtered: bool, control: bool) -> None:
    cell = {"poisons_flagged": 0.8, "clean_flagged": 0.05, "clean_acc_after": 0.4}
    defences = {"none": {"success": none, "clean_acc_after": 0.4}}
    if model == "lgm":
        defences["lgm"] = dict(cell, success=filtered)
    defences["centroid"] = dict(cell, success=False)
    rec = {"model": model, "trial": trial, "attack": "cm", "n_poisons": 50, "setting": "transfer",
           "victim_name": "linear", "clean_label": trial % 2 == 0, "defences": defences,
           "victims": {"ncm": {"none": {"success": control}}}}
    (folder / "trials").mkdir(parents=True, exist_ok=True)
    (folder / "trials" / f"{model}__cm__k50__transfer__t{trial:04d}.json").write_text(json.dumps(rec))


def test_counts_each_cell_and_pairs_softmax_against_lgm_by_trial(tmp_path):
    from filter_table import markdown, table

    lgm = [(True, False), (True, True), (False, False), (True, False)]  # (no filter, behind the LGM filter)
    for t, (a, b) in enumerate(lgm):
        _trial(tmp_path, "lgm", t, a, b, control=t == 0)
        _trial(tmp_path, "softmax", t, True, False, control=True)
    (tmp_path / "trials" / "lgm__cm__k50__transfer__t0009.json").write_text(json.dumps({"skipped": "few bases"}))
    t = table(tmp_path)
    assert t["trials"] == {"lgm": 4, "softmax": 4}  # the skipped trial is no trial
    cells = {(r["model"], r["victim"]): r["cells"] for r in t["rows"]}
    assert cells[("lgm", "linear")]["none"]["successes"] == 3 and cells[("lgm", "linear")]["lgm"]["successes"] == 1
    assert cells[("lgm", "ncm")]["none"] == {"successes": 1, "trials": 4, "ci95": cells[("lgm", "ncm")]["none"]["ci95"]}
    assert "lgm" not in cells[("softmax", "linear")]  # the softmax model has no likelihood filter
    p = t["paired"]["softmax vs lgm features: linear, no filter"]
    assert (p["left"], p["right"], p["only_left"], p["only_right"]) == (4, 3, 1, 0) and p["p"] == 1.0
    f = t["paired"]["lgm/linear: lgm vs none"]
    assert (f["only_left"], f["only_right"]) == (0, 2) and f["p"] == 0.5
    assert t["all_poisons_clean_label"] == 0.5
    md = markdown(t)
    assert "| linear head on **LGM** features | 3 of 4 (" in md and "| nearest class mean on softmax features | 4 of 4" in md
