"""The paper's own setting: poisons crafted against a frozen model, scored by every defence (no victim).

    POISONLAB_DATA_DIR=DIR python bench/reproduce_paper.py --checkpoint checkpoints/mnist_lgm_d2.pt

Yaseen et al. craft feature-collision poisons against a frozen 2-D LGM model (identity covariance,
alpha = 1, lambda = 0.1) and compare the likelihood of clean and poisoned training examples under
their claimed class. This does the same with ``core.lab.poison_pool`` (pairs planned by
``core.pipeline``: correctly classified targets, judged bases, ``--poisons`` each, the clean-label
budget unless ``--eps`` says otherwise) and reports ROC AUC and TPR at 1%/5% FPR for every defence that applies.
"""

from __future__ import annotations

import argparse
import json
import time

from core.attacks import ATTACKS, settings_for
from core.checkpoints import load_checkpoint
from core.data import load_dataset, load_demo
from core.judge import load_judge
from core.lab import compare_defences, poison_pool
from core.pipeline import correct_targets


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--attack", default="fc")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--poisons", type=int, default=5)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--eps", type=float, help="l_inf budget (default: the data set's clean-label budget)")
    ap.add_argument("--adaptive-weight", type=float, default=1.0, help="stealth weight of fc-adaptive")
    ap.add_argument("--n-clean", type=int, default=2000)
    ap.add_argument("--demo", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, meta = load_checkpoint(args.checkpoint)
    name = meta["config"]["dataset"]
    data = load_demo(name) if args.demo else load_dataset(name)
    extra = {"adaptive_weight": args.adaptive_weight} if "adaptive_weight" in ATTACKS[args.attack].settings.knobs() else {}
    knobs = settings_for(args.attack, name, iters=args.iters, eps=args.eps, record_every=args.iters, **extra)
    t0 = time.perf_counter()
    feats, claimed, is_poison = poison_pool(model, data, args.attack, knobs, correct_targets([model], data),
                                            n_pairs=args.pairs, n_poisons=args.poisons, n_clean=args.n_clean,
                                            seed=args.seed, judge=load_judge(data))
    res = compare_defences(model, feats, claimed, is_poison)
    print(json.dumps({"checkpoint": args.checkpoint, "attack": args.attack, "pairs": args.pairs,
                      "poisons": int(is_poison.sum()), "clean": int((~is_poison).sum()), "iters": args.iters,
                      "eps": knobs["eps"],
                      "adaptive_weight": args.adaptive_weight if args.attack == "fc-adaptive" else None,
                      "wall_s": round(time.perf_counter() - t0, 1),
                      "defences": {d: {k: r[k] for k in ("auc", "tpr_at_fpr_1", "tpr_at_fpr_5", "chi2")
                                       if k in r} for d, r in res.items()}}, indent=2))


if __name__ == "__main__":
    main()
