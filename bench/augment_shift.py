"""How much of a poison's feature shift survives the victim's random crop and flip?

    python bench/augment_shift.py --experiment checkpoints/experiments/meanshift50_newclasses_cifar10 \\
        --replay checkpoints/replays/meanshift50_newclasses_cifar10_augment --out bench/results/augment_shift.json

The class-mean shift crafts poisons p_i from bases b_i so that the base class's mean feature moves
by (1/n) sum_i (f(p_i) - f(b_i)) onto the target. A victim trained with the benchmark's augmentation
never sees p_i itself, only crops and flips of it. For each stored trial this measures the share of
the crafted shift that survives: with the same random crop and flip A applied to a poison and to
its base, s = <sum_i f(A p_i) - f(A b_i), D> / ||D||^2 with D = sum_i f(p_i) - f(b_i), averaged over
``--draws`` draws (1: the shift is intact, 0: gone), beside whether the augmented and plain linear
victims of the replay were flipped. The sanity test of "augmentation stops the attack": if the
shift survived, the augmented victim's resistance would come from its training, not the poisons.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch

from core.checkpoints import load_checkpoint
from core.data import load_dataset
from core.experiments import victim_classes
from core.models import to_input
from core.report import load_trials
from core.train import augment_batch


def shift_kept(model, poisons: np.ndarray, bases: np.ndarray, draws: int, seed: int) -> list[float]:
    """Per draw, the share of the poisons' summed feature shift left after one crop-flip of each pair."""
    with torch.no_grad():
        p, b = to_input(poisons), to_input(bases)
        crafted = (model.features(p) - model.features(b)).sum(0)
        norm = crafted.pow(2).sum().clamp_min(1e-12)
        kept = []
        for d in range(draws):
            same = [augment_batch(x, "crop-flip", torch.Generator().manual_seed(seed + d)) for x in (p, b)]
            moved = (model.features(same[0]) - model.features(same[1])).sum(0)
            kept.append(float(moved @ crafted / norm))
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", type=Path, required=True)
    ap.add_argument("--replay", type=Path, default=None, help="a replay with victims 'linear-aug' and 'linear'")
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    cfg = json.loads((args.experiment / "config.json").read_text())
    replayed = {(r["model"], r["trial"]): r for r in load_trials(args.replay)} if args.replay else {}
    rows = []
    for name, path in cfg["models"].items():
        model, meta = load_checkpoint(path)
        model.eval()
        data = load_dataset(meta["config"]["dataset"], cfg.get("data_dir"))
        classes = victim_classes(path)
        data = data.restrict(classes) if classes is not None else data
        for rec in load_trials(args.experiment):
            if rec["model"] != name:
                continue
            key = f"{name}__{rec['attack']}__k{rec['n_poisons']}__{rec['setting']}__t{rec['trial']:04d}"
            poisons = np.load(args.experiment / "trials" / f"{key}.npz")["poisons"]
            kept = shift_kept(model, poisons, data.x_train[rec["base_indices"]], args.draws, seed=rec["trial"])
            row = {"model": name, "trial": rec["trial"], "shift_kept_mean": statistics.fmean(kept),
                   "shift_kept": kept, "plain_victim_flipped": rec["defences"]["none"]["success"]}
            rep = replayed.get((name, rec["trial"]))
            if rep is not None:
                row["augmented_victim_flipped"] = rep["defences"]["none"]["success"]
                row["linear_replayed_flipped"] = rep["victims"]["linear"]["none"]["success"]
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "shift_kept"}), flush=True)
    summary = {}
    for name in cfg["models"]:
        mine = [r["shift_kept_mean"] for r in rows if r["model"] == name]
        if mine:
            summary[name] = {"trials": len(mine), "shift_kept_median": statistics.median(mine),
                             "shift_kept_min": min(mine), "shift_kept_max": max(mine)}
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"experiment": str(args.experiment), "draws": args.draws,
                                        "summary": summary, "trials": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
