"""REPRODUCTION section 10's ladder table (bench/ladder_table.py) on a constructed ladder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def test_each_filter_shows_static_then_its_own_rungs_then_the_others_with_their_pairing():
    from ladder_table import table

    from tests.test_pages import _ladder_rows

    rows = [{**r, "stealth": "likelihood" if r["filter"] == "lgm" else "centroid"} for r in _ladder_rows()
            if r["model"] == "lgm"]
    rival = {**rows[1], "filter": "lgm", "stealth": "centroid", "weight": 0.1, "flagged": {"share": 0.0, "ci95": [0, 0.1]},
             "success_filtered": {"successes": 5, "rate": 5 / 6, "ci95": [0.44, 0.97]},
             "vs_static": {"pairs": 6, "adaptive": 5, "static": 0, "only_adaptive": 5, "only_static": 0, "p": 0.0625}}
    small = {**rival, "filter": "centroid", "trials": 2}  # too few trials for --min-trials 3
    lines = table({"filters": ["lgm", "centroid"], "rows": rows, "others": [rival, small]}, min_trials=3).splitlines()
    body = [line.split(" | ") for line in lines[2:]]
    assert [(b[1], b[2]) for b in body] == [
        ("LGM likelihood (the paper)", "static"), ("LGM likelihood (the paper)", "aimed at LGM likelihood (the paper), w = 1"),
        ("LGM likelihood (the paper)", "aimed at LGM likelihood (the paper), w = 10"),
        ("LGM likelihood (the paper)", "aimed at Distance to class centre, w = 0.1"),
        ("Distance to class centre", "static"), ("Distance to class centre", "aimed at Distance to class centre, w = 1"),
        ("Distance to class centre", "aimed at Distance to class centre, w = 10")]
    assert body[3][3:] == ["6", "0%", "3 of 6", "5 of 6 (44-97%)", "5 : 0, p = 0.062 |"]
    assert body[0][-1] == " |"  # the static attack is not paired with itself
