"""Can the end-to-end victim be poisoned at all? The label-flip sanity test for the ``end2end`` setting.

The shipped ``end2end`` experiment (the whole network fine-tuned for one epoch on 1000 clean
images plus the poisons) was never poisoned, and not even by unconstrained poisons
(``bench/configs/end2end_unconstrained.json``). That could mean the attack is weak, or that this
victim cannot be poisoned by a handful of images at all. The test that tells them apart skips
crafting: ``m`` exact copies of the target *image*, labelled as the base class, join the clean
images, and the same victim is fine-tuned the same way (``core.victim.retrain_victim``).

    POISONLAB_DATA_DIR=DIR python bench/sanity_end2end.py --pairs 10 --out bench/results/sanity_end2end_mnist.json

Pairs are planned by ``core.pipeline.plan_trial`` from ``default_rng([seed, pair])``, as the experiments'.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from core.attacks import Poisons
from core.checkpoints import CHECKPOINT_DIR, SUITES, load_checkpoint, shipped_pair
from core.data import load_dataset
from core.pipeline import correct_targets, plan_trial
from core.stats import wilson_interval
from core.victim import Retraining, retrain_victim

MODELS = {d: shipped_pair(d) for d in SUITES}  # the high-d (softmax, LGM) pair of each data set


def copies_of_target(target: np.ndarray, m: int, base_class: int, target_label: int, feat_dim: int) -> Poisons:
    """``m`` exact copies of the target image carrying the base class's label (a label flip)."""
    images = np.repeat(target.astype(np.float32) / 255.0, m, axis=0)
    return Poisons(poisons=images, bases=images.copy(), target=images[:1].copy(),
                   base_labels=np.full(m, base_class, dtype=np.int64), target_label=target_label,
                   traj_iters=np.zeros(1, int), traj_features=np.zeros((1, m, feat_dim), np.float32),
                   traj_objective=np.zeros((1, m), np.float32), target_feature=np.zeros(feat_dim, np.float32))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist", choices=list(MODELS))
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 5, 25])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (the end2end experiment's)")
    ap.add_argument("--n-clean", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    state = json.loads(out.read_text()) if out.is_file() else {"trials": []}
    done = {(t["model"], t["pair"], t["copies"]) for t in state["trials"]}
    ds = load_dataset(args.dataset)
    models = {n: load_checkpoint(CHECKPOINT_DIR / f"{n}.pt")[0] for n in MODELS[args.dataset]}
    candidates = correct_targets(list(models.values()), ds)
    t0 = time.perf_counter()
    for pair in range(args.pairs):
        plan = plan_trial(ds, (args.seed, pair), candidates, n_poisons=5, n_clean=args.n_clean)
        target = ds.x_test[plan.target_index:plan.target_index + 1]
        x_clean, y_clean = ds.x_train[plan.clean_indices], ds.y_train[plan.clean_indices]
        x_test, y_test = ds.x_test[plan.test_indices], ds.y_test[plan.test_indices]
        for name, model in models.items():
            for m in args.counts:
                if (name, pair, m) in done:
                    continue
                flip = copies_of_target(target, m, plan.base_class, plan.target_label, model.config.feat_dim)
                outcome, _ = retrain_victim(model, flip, (x_clean, y_clean), (x_test, y_test),
                                            Retraining(setting="end2end", seed=pair, epochs=args.epochs))
                state["trials"].append({"model": name, "pair": pair, "copies": m, "target_index": plan.target_index,
                                        "base_class": plan.base_class, "success": outcome.success,
                                        "pred_after": outcome.pred_after,
                                        "clean_acc_after": outcome.clean_acc_after})
        rows = []
        for name in models:
            for m in args.counts:
                ts = [t for t in state["trials"] if t["model"] == name and t["copies"] == m]
                wins = sum(t["success"] for t in ts)
                rows.append({"model": name, "copies": m, "pairs": len(ts), "successes": wins,
                             "ci95": list(wilson_interval(wins, len(ts))),
                             "clean_acc_after": float(np.mean([t["clean_acc_after"] for t in ts]))})
        state.update(config=vars(args), rows=rows, wall_s_this_run=round(time.perf_counter() - t0, 1),
                     torch=torch.__version__)
        out.write_text(json.dumps(state, indent=1) + "\n")
        print(f"pair {pair + 1}/{args.pairs} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for r in state["rows"]:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
