"""Does bullseye polytope's early stop lose any success? Paired trials of two experiments.

    python bench/bench_early_stop.py --full checkpoints/experiments/newclasses_cifar10_bp_full \\
        --early checkpoints/experiments/newclasses_cifar10_bp_early --out bench/results/bp_early_stop.json

The two experiments differ only in the attack's settings (``bench/configs/newclasses_cifar10_bp_full.json``:
the poisoning benchmark's 1200 steps, last iterate; ``..._bp_early.json``: at most 800 steps, a
plateau stop of 100 steps and the best iterate), so trial t of a model has the same target,
bases, clean set and victim seed in both: the outcomes are paired. For every victim behind every
filter, reports each side's successes, the discordant pairs and the exact McNemar p-value, and
beside them the steps run, the crafting time and the poisons' mean feature distance to the target.
Only trials present in both folders count. Prints a markdown table; ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from core.report import load_trials, outcomes, paired


def _by_trial(folder: Path, attack: str) -> dict[tuple[str, int], dict]:
    return {(r["model"], int(r["trial"])): r for r in load_trials(folder) if r["attack"] == attack}


def _cells(rec: dict) -> set[tuple[str | None, str]]:
    """(victim, defence) pairs a record holds: None for the experiment's own victim, then each control."""
    return {(None, d) for d in rec["defences"]} | {(v, d) for v, ds in rec.get("victims", {}).items() for d in ds}


def compare(full_dir: Path, early_dir: Path, attack: str = "bp") -> dict:
    full, early = _by_trial(full_dir, attack), _by_trial(early_dir, attack)
    keys = sorted(set(full) & set(early))
    for k in keys:  # paired only if each trial drew the same target, bases and seeds in both
        for field in ("target_index", "base_class", "base_indices", "seeds"):
            if full[k].get(field) != early[k].get(field):
                raise ValueError(f"trial {k}: {field} differs: the two experiments are not paired")
    fr, er = [full[k] for k in keys], [early[k] for k in keys]
    rows = []
    for model in sorted({m for m, _ in keys}):
        mine = [k for k in keys if k[0] == model]
        for victim, defence in sorted(set.intersection(*(_cells(full[k]) & _cells(early[k]) for k in mine)),
                                      key=lambda c: (c[0] or "", c[1])):
            pair = paired(outcomes(fr, model, victim, defence), outcomes(er, model, victim, defence), attack)
            rows.append({"model": model, "victim": victim or full[mine[0]].get("victim_name", "warm"),
                         "defence": defence, "trials": pair["pairs"], "full_successes": pair["left"],
                         "early_successes": pair["right"], "lost": pair["only_left"], "gained": pair["only_right"],
                         "mcnemar_p": pair["p"]})
    sides = {}
    for name, chosen in (("full", fr), ("early", er)):
        sides[name] = {"iterations_run": [r["iterations_run"] for r in chosen],
                       "craft_s_median": statistics.median(r["craft_s"] for r in chosen) if chosen else None,
                       "feature_distance_mean": statistics.fmean(r["feature_distance"] for r in chosen)
                       if chosen else None}
    return {"full": str(full_dir), "early": str(early_dir), "attack": attack, "pairs": len(keys),
            "trials": [list(k) for k in keys], "sides": sides, "cells": rows}


def markdown(result: dict) -> str:
    lines = ["| model | victim | filter | trials | 1200 steps | early stop | lost | gained | McNemar p |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["cells"]:
        lines.append(f"| {r['model']} | {r['victim']} | {r['defence']} | {r['trials']} | {r['full_successes']} | "
                     f"{r['early_successes']} | {r['lost']} | {r['gained']} | {r['mcnemar_p']:.3g} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", type=Path, default=Path("checkpoints/experiments/newclasses_cifar10_bp_full"))
    ap.add_argument("--early", type=Path, default=Path("checkpoints/experiments/newclasses_cifar10_bp_early"))
    ap.add_argument("--attack", default="bp")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result = compare(args.full, args.early, args.attack)
    print(f"{result['pairs']} paired trials")
    for name, side in result["sides"].items():
        its = side["iterations_run"]
        if its:
            print(f"{name}: steps run median {statistics.median(its)} (min {min(its)}, max {max(its)}), "
                  f"crafting median {side['craft_s_median']:.1f} s, feature distance {side['feature_distance_mean']:.3f}")
    print(markdown(result))
    cells = result["cells"]
    print(f"over all {len(cells)} cells: {sum(c['lost'] for c in cells)} successes lost, "
          f"{sum(c['gained'] for c in cells)} gained (a trial counts once per victim and filter)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
