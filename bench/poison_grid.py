"""Look at the poisons: base, poison at each budget, and target, side by side, with the judges' calls.

    POISONLAB_DATA_DIR=DIR python bench/poison_grid.py --dataset mnist --pairs 4 \
        --eps 0.05 0.1 0.15 0.2 0.3 --out bench/results/poison_grid_mnist.png

One row per planned pair (``core.pipeline``, the same pairs as ``bench_budget.py``): the first
poison of each budget, crafted with feature collision against the softmax model. Each poison's
caption gives the reference classifier's label, the pixel k-NN's label and whether it is
clean-label (both say the base class). The figure is what a person checks by eye.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from core.attacks import budget_levels, craft, settings_for
from core.checkpoints import CHECKPOINT_DIR, SUITES, load_checkpoint, shipped_pair
from core.data import load_dataset
from core.judge import load_judge
from core.pipeline import correct_targets, plan_trial

MODEL = {d: shipped_pair(d)[0] for d in SUITES}  # the high-d softmax model of each data set


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist", choices=list(MODEL))
    ap.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.3])
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.set_num_threads(2)
    ds = load_dataset(args.dataset)
    judge = load_judge(ds)
    model, _ = load_checkpoint(CHECKPOINT_DIR / f"{MODEL[args.dataset]}.pt")
    candidates = correct_targets([model], ds)
    cols = len(args.eps) + 2
    fig, axes = plt.subplots(args.pairs, cols, figsize=(1.7 * cols, 1.95 * args.pairs), squeeze=False)
    grey = {"cmap": "gray", "vmin": 0, "vmax": 1} if ds.x_train.shape[-1] == 1 else {}
    for row in range(args.pairs):
        plan = plan_trial(ds, (args.seed, row), candidates, n_poisons=1, judge=judge)
        base = ds.x_train[plan.base_indices]
        target = ds.x_test[plan.target_index:plan.target_index + 1]
        images = [(base[0] / 255.0, f"base: {ds.classes[plan.base_class]}")]
        for eps in args.eps:
            p = craft(model, "fc", base, target, np.full(1, plan.base_class), plan.target_label,
                      settings_for("fc", ds.name, iters=args.iters, eps=eps, seed=row))
            v = judge.verdict(p.poisons, plan.base_class, exclude=plan.base_indices)
            call = "clean" if v.clean_label[0] else "NOT clean"
            images.append((p.poisons[0], f"{budget_levels(eps)}/255: {call}\nnet {ds.classes[v.reference[0]]}, "
                                         f"k-NN {ds.classes[v.knn[0]]}"))
        images.append((target[0] / 255.0, f"target: {ds.classes[plan.target_label]}"))
        for ax, (img, title) in zip(axes[row], images):
            ax.imshow(np.clip(img.squeeze(), 0, 1), **grey)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.suptitle(f"{args.dataset}: feature collision against {MODEL[args.dataset]} at each pixel budget", fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(args.out)


if __name__ == "__main__":
    main()
