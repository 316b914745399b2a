"""Attack strength: success rate of an attack over random target/base pairs, with a Wilson 95% CI.

    POISONLAB_DATA_DIR=DIR python bench/bench_attack_success.py \
        --checkpoint checkpoints/mnist_softmax_d64.pt --attack fc --n-poisons 10 --pairs 50

Each pair: a random correctly classified test image as target, a random other class as base class,
``--n-poisons`` random training images of that class as bases, a random clean subset for the
transfer victim. All choices come from ``--seed``. Prints JSON (per-trial records and the rate).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from core.attacks import attack_knobs, craft
from core.checkpoints import load_checkpoint
from core.data import load_dataset, load_demo, pick_attack_data
from core.stats import wilson_interval
from core.train import predict_logits
from core.victim import retrain_victim


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="checkpoints/mnist_softmax_d64.pt")
    ap.add_argument("--attack", default="fc")
    ap.add_argument("--n-poisons", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--beta0", type=float, default=0.25)
    ap.add_argument("--opacity", type=float, default=0.3, help="watermark (fc), the paper's 30%%")
    ap.add_argument("--eps", type=float, help="l_inf budget (polytope default: attacks.default_eps)")
    ap.add_argument("--n-clean", type=int, default=1000)
    ap.add_argument("--setting", default="transfer")
    ap.add_argument("--demo", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, meta = load_checkpoint(args.checkpoint)
    ds = load_demo(meta["config"]["dataset"]) if args.demo else load_dataset(meta["config"]["dataset"])
    rng = np.random.default_rng(args.seed)
    pred = predict_logits(model, ds.x_test[:2000]).argmax(1).numpy()
    correct = np.flatnonzero(pred == ds.y_test[:2000])
    trials, t0 = [], time.perf_counter()
    for k in range(args.pairs):
        ti = int(rng.choice(correct))
        tl = int(ds.y_test[ti])
        bc = int(rng.choice([c for c in range(10) if c != tl]))
        bases, clean = pick_attack_data(ds.y_train, tl, bc, args.n_poisons, args.n_clean, args.seed * 1000 + k)
        knobs = attack_knobs(args.attack, ds.name, args.iters, beta0=args.beta0, opacity=args.opacity, eps=args.eps,
                             record_every=args.iters)
        p = craft(model, args.attack, ds.x_train[bases], ds.x_test[ti:ti + 1], np.full(len(bases), bc), tl, **knobs)
        out, _ = retrain_victim(model, p, ds.x_train[clean], ds.y_train[clean], ds.x_test[2000:3000],
                                ds.y_test[2000:3000], args.setting, seed=k)
        trials.append({"target_index": ti, "target_label": tl, "base_class": bc, "success": out.success,
                       "feature_distance": float(np.mean(out.feature_distance)),
                       "l2": float(np.mean(out.poison_l2)), "linf": float(np.mean(out.poison_linf)),
                       "clean_acc_after": out.clean_acc_after, "craft_s": round(p.time_s, 2)})
        print(json.dumps(trials[-1]), flush=True)
    wins = sum(t["success"] for t in trials)
    lo, hi = wilson_interval(wins, len(trials))
    print(json.dumps({"checkpoint": args.checkpoint, "attack": args.attack, "n_poisons": args.n_poisons,
                      "iters": args.iters, "beta0": args.beta0,
                      "opacity": args.opacity, "eps": args.eps, "setting": args.setting, "pairs": len(trials),
                      "successes": wins, "rate": wins / len(trials), "ci95": [lo, hi],
                      "mean_l2": float(np.mean([t["l2"] for t in trials])),
                      "threads": torch.get_num_threads(), "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
