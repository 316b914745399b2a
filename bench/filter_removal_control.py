"""Sanity test for "a filter helped the poisons": the same clean images removed at random.

Some grid trials flip the victim *behind* a filter and not without one. A filter that throws away
clean images (deep k-NN removes about half of them on the new-classes features, spectral
signatures 15%) can help the poisons by thinning the clean base class, by removing the right clean
images, or by chance. For every such (trial, filter) this reruns the trial's victim with the
filter's own poison decisions kept but its clean removals replaced by the same number of clean
images per class removed at random (``--draws`` seeded draws). If random removals flip the target
about as often as the filter did, the filter's "help" is thinning; if they rarely do, the filter
chose the clean images that mattered.

    POISONLAB_DATA_DIR=DIR python bench/filter_removal_control.py \
        --experiment checkpoints/experiments/newclasses_cifar10 --out bench/results/filter_removal_newclasses.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from core.attacks import Poisons
from core.experiments import ExperimentConfig, _bank, _model, _trial_key, _trial_setup, candidate_targets
from core.models import extract_features
from core.pipeline import fit_filter
from core.report import load_trials
from core.stats import wilson_interval
from core.victim import retrain_victim


def helped(records: list[dict]) -> list[tuple[dict, str]]:
    """(record, filter) where the own victim flipped behind the filter and not without one."""
    return [(r, d) for r in records for d, v in r["defences"].items()
            if d != "none" and v["success"] and not r["defences"]["none"]["success"]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--draws", type=int, default=20)
    args = ap.parse_args()
    exp = Path(args.experiment)
    cfg = ExperimentConfig.from_file(exp / "config.json")
    cases = helped(load_trials(exp))
    targets = candidate_targets(cfg)
    rows, t0 = [], time.perf_counter()
    for rec, defence in cases:
        path = cfg.models[rec["model"]]
        model = _model(path)[0]
        _, ds, _, plan, new_classes = _trial_setup(cfg, targets, path, rec["n_poisons"], rec["trial"])
        assert plan.target_index == rec["target_index"] and plan.base_indices.tolist() == rec["base_indices"]
        key = _trial_key(rec["model"], rec["attack"], rec["n_poisons"], rec["setting"], rec["trial"])
        with np.load(exp / "trials" / f"{key}.npz") as z:
            images = z["poisons"].astype(np.float32) / 255.0
        target = ds.x_test[plan.target_index:plan.target_index + 1].astype(np.float32) / 255.0
        k = len(images)
        poisons = Poisons(poisons=images, bases=ds.x_train[plan.base_indices].astype(np.float32) / 255.0,
                          target=target, base_labels=np.full(k, plan.base_class), target_label=plan.target_label,
                          traj_iters=np.zeros(1, int), traj_features=np.zeros((1, k, 1), np.float32),
                          traj_objective=np.zeros((1, k), np.float32), target_feature=np.zeros(1, np.float32))
        bank = _bank(path, cfg.demo, cfg.data_dir)
        clean_f = bank.train[plan.clean_indices]
        y_clean = ds.y_train[plan.clean_indices]
        pool = np.concatenate([clean_f, extract_features(model, images).numpy()])
        claimed = np.concatenate([y_clean, poisons.base_labels])
        n_classes = len(ds.classes) if new_classes else None
        flags = fit_filter(defence, model, pool, claimed, len(clean_f), len(ds.classes), cfg.fpr, new_classes).flags_
        keep_clean, keep_poison = ~flags[:len(clean_f)], ~flags[len(clean_f):]
        recipe = cfg.primary_recipe(rec["trial"])
        test = (ds.x_test[plan.test_indices], ds.y_test[plan.test_indices])
        test_f = torch.from_numpy(bank.test[plan.test_indices])
        x_clean = ds.x_train[plan.clean_indices]

        def flips(keep: np.ndarray) -> tuple[bool, float]:
            outcome, _ = retrain_victim(model, poisons, (x_clean[keep], y_clean[keep]), test, recipe,
                                        keep=keep_poison, clean_feats=clean_f[keep], test_feats=test_f,
                                        n_classes=n_classes)
            return outcome.success, outcome.clean_acc_after

        own, own_acc = flips(keep_clean)
        removed = {int(c): int((~keep_clean & (y_clean == c)).sum()) for c in np.unique(y_clean)}
        draws = []
        for d in range(args.draws):
            rng = np.random.default_rng([rec["trial"], d])
            keep = np.ones(len(y_clean), bool)
            for c, n in removed.items():
                keep[rng.choice(np.flatnonzero(y_clean == c), n, replace=False)] = False
            draws.append(flips(keep))
        wins = sum(s for s, _ in draws)
        rows.append({"trial": key, "filter": defence, "victim": cfg.primary_name, "filter_flips": own,
                     "stored_outcome": rec["defences"][defence]["success"], "clean_acc_after_filter": own_acc,
                     "poisons_kept": int(keep_poison.sum()), "clean_removed_per_class": removed,
                     "base_class": int(plan.base_class), "random_draws": args.draws, "random_flips": wins,
                     "random_rate": wins / args.draws, "random_ci95": list(wilson_interval(wins, args.draws)),
                     "random_clean_acc_after": float(np.mean([a for _, a in draws]))})
        print(json.dumps({k: rows[-1][k] for k in ("trial", "filter", "filter_flips", "random_flips", "random_draws")}),
              flush=True)
    Path(args.out).write_text(json.dumps({"experiment": str(exp), "rows": rows,
                                          "wall_s": round(time.perf_counter() - t0, 1)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
