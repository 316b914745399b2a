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

from core.stats import mcnemar_exact


def _records(folder: Path, attack: str) -> dict[tuple[str, int], dict]:
    out = {}
    for path in sorted((folder / "trials").glob(f"*__{attack}__*.json")):
        if path.name.endswith(".tmp"):
            continue
        rec = json.loads(path.read_text())
        if not rec.get("skipped"):
            out[(rec["model"], int(rec["trial"]))] = rec
    return out


def _outcomes(rec: dict) -> dict[tuple[str, str], bool]:
    """(victim, defence) -> success: the experiment's own victim and each control."""
    rows = {(rec["victim_name"], d): v["success"] for d, v in rec["defences"].items()}
    for victim, by_defence in rec.get("victims", {}).items():
        rows.update({(victim, d): v["success"] for d, v in by_defence.items()})
    return rows


def _check_paired(a: dict, b: dict) -> None:
    for key in ("target_index", "base_class", "base_indices", "seeds"):
        if a.get(key) != b.get(key):
            raise ValueError(f"trial {a['model']} {a['trial']}: {key} differs: the two experiments are not paired")


def compare(full_dir: Path, early_dir: Path, attack: str = "bp") -> dict:
    full, early = _records(full_dir, attack), _records(early_dir, attack)
    keys = sorted(set(full) & set(early))
    for k in keys:
        _check_paired(full[k], early[k])
    rows = []
    for model in sorted({m for m, _ in keys}):
        mk = [k for k in keys if k[0] == model]
        cells = sorted(set.intersection(*(set(_outcomes(full[k])) & set(_outcomes(early[k])) for k in mk)))
        for victim, defence in cells:
            a = [_outcomes(full[k])[(victim, defence)] for k in mk]
            b = [_outcomes(early[k])[(victim, defence)] for k in mk]
            rows.append({"model": model, "victim": victim, "defence": defence, "trials": len(mk),
                         "full_successes": sum(a), "early_successes": sum(b),
                         "lost": sum(x and not y for x, y in zip(a, b)),
                         "gained": sum(y and not x for x, y in zip(a, b)), "mcnemar_p": mcnemar_exact(a, b)})
    sides = {}
    for name, recs in (("full", full), ("early", early)):
        chosen = [recs[k] for k in keys]
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
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
