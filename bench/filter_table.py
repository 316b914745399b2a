"""REPRODUCTION section 10's victim x filter tables, from an experiment folder's stored trials.

    python bench/filter_table.py checkpoints/experiments/meanshift50_newclasses_cifar10 [--json OUT]

One row per (model, victim head): targets flipped with no filter and behind each filter, "k of n"
with the Wilson 95% interval where it matters (no filter, the LGM likelihood); the share of
poisons and of clean images each filter flags; clean accuracy; and the paired exact McNemar
p-values the section's sentences need (softmax against LGM features, each filter against none).
Written so that every number of the section can be regenerated from the shipped trials (and is
recomputed as a resumed experiment grows).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from core.report import fmt_rate, load_trials, outcomes, paired
from core.stats import wilson_interval

FILTERS = ("none", "lgm", "centroid", "spectral", "ac", "knn")
FILTER_NAMES = {"none": "no filter", "lgm": "behind the LGM likelihood", "centroid": "centroid",
                "spectral": "spectral", "ac": "activation clustering", "knn": "deep k-NN"}
HEAD_NAMES = {"linear": "linear head", "linear-aug": "linear head (crop + flip)", "ncm": "nearest class mean",
              "gaussian": "fitted Gaussians", "warm": "warm-started head"}


def _victims(records: list[dict], model: str) -> list[str]:
    """The model's own victim first, then its controls, in the order the records hold them."""
    own = [r.get("victim_name", "warm") for r in records if r["model"] == model]
    ctl = [v for r in records if r["model"] == model for v in r.get("victims", {})]
    return list(dict.fromkeys(own + ctl))


def table(exp_dir: str | Path) -> dict:
    """Every cell of the section's table, and the paired comparisons, as plain data."""
    records = load_trials(exp_dir)
    rows, pairs = [], {}
    for model in ("lgm", "softmax"):
        for victim in _victims(records, model):
            cells = {}
            for f in FILTERS:
                o = outcomes(records, model, victim, f)
                if o:
                    k, n = sum(o.values()), len(o)
                    cells[f] = {"successes": k, "trials": n, "ci95": list(wilson_interval(k, n))}
            rows.append({"model": model, "victim": victim, "cells": cells})
            for f in FILTERS[1:]:
                if f in cells:
                    pairs[f"{model}/{victim}: {f} vs none"] = paired(outcomes(records, model, victim, f),
                                                                     outcomes(records, model, victim, "none"))
    shared = set(_victims(records, "lgm")) & set(_victims(records, "softmax"))
    for victim in sorted(shared):
        pairs[f"softmax vs lgm features: {victim}, no filter"] = paired(outcomes(records, "softmax", victim),
                                                                       outcomes(records, "lgm", victim))
    flagged = {}
    for model in ("lgm", "softmax"):
        for f in FILTERS[1:]:
            ds = [r["defences"][f] for r in records if r["model"] == model and f in r["defences"]]
            if ds:
                flagged[f"{model}/{f}"] = {"poisons": float(np.mean([d["poisons_flagged"] for d in ds])),
                                           "clean": float(np.mean([d["clean_flagged"] for d in ds])),
                                           "clean_acc_after": float(np.mean([d["clean_acc_after"] for d in ds]))}
        ds = [r["defences"]["none"] for r in records if r["model"] == model and "none" in r["defences"]]
        if ds:
            flagged[f"{model}/none"] = {"clean_acc_after": float(np.mean([d["clean_acc_after"] for d in ds]))}
    clean = [bool(r.get("clean_label")) for r in records]
    return {"experiment": str(exp_dir), "trials": {m: sum(r["model"] == m for r in records) for m in ("lgm", "softmax")},
            "all_poisons_clean_label": float(np.mean(clean)) if clean else None,
            "rows": rows, "paired": pairs, "filters": flagged}


def markdown(t: dict) -> str:
    present = [f for f in FILTERS if any(f in r["cells"] for r in t["rows"])]
    lines = ["| victim | " + " | ".join(FILTER_NAMES[f] for f in present) + " |",
             "|---|" + "---|" * len(present)]
    for r in t["rows"]:
        feats = "**LGM**" if r["model"] == "lgm" else "softmax"
        out = []
        for f in present:
            c = r["cells"].get(f)
            if c is None:
                out.append("-")
                continue
            s = f"{c['successes']} of {c['trials']}"
            if f in ("none", "lgm"):
                s += f" ({fmt_rate(c['successes'] / c['trials'], c['ci95']).split(' ', 1)[1].strip('()')})"
            out.append(s)
        lines.append(f"| {HEAD_NAMES.get(r['victim'], r['victim'])} on {feats} features | " + " | ".join(out) + " |")
    lines.append("")
    for name, p in t["paired"].items():
        lines.append(f"- {name}: {p['left']} vs {p['right']} of {p['pairs']}, discordant {p['only_left']} : "
                     f"{p['only_right']}, exact McNemar p = {p['p']:.3g}")
    for name, f in t["filters"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v:.1%}" for k, v in f.items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--json", help="also write the table as JSON here")
    args = ap.parse_args()
    t = table(args.experiment)
    if args.json:
        Path(args.json).write_text(json.dumps(t, indent=1))
    print(markdown(t))


if __name__ == "__main__":
    main()
