"""Look at what a judge accepts and rejects: poisons beside their bases, with its call.

    POISONLAB_DATA_DIR=DIR python bench/judge_grid.py \
        --experiment checkpoints/experiments/meanshift_newclasses_cifar10 --judge cifar10-new-classes \
        --out bench/results/judge_grid_newclasses.png

Reads ``EXP/rejudged/JUDGE.json`` (``poisonlab rejudge``) and draws, seeded, ``--n`` poisons the
judge accepted and ``--n`` it rejected, each base above its poison, with the class the judge named.
A person looking at the sheet is the check the judge stands in for: a rejected poison that plainly
shows its base class is the judge's error, an accepted one that shows the target is worse.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from core.experiments import ExperimentConfig, _model_data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", required=True)
    ap.add_argument("--judge", required=True)
    ap.add_argument("--n", type=int, default=8, help="poisons of each kind")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exp = Path(args.experiment)
    cfg = ExperimentConfig.from_file(exp / "config.json")
    rejudged = json.loads((exp / "rejudged" / f"{args.judge}.json").read_text())
    picks: dict[bool, list] = {True: [], False: []}
    for key, t in sorted(rejudged["trials"].items()):
        for i, ok in enumerate(t["clean_label"]):
            picks[bool(ok)].append((key, i, t["reference"][i]))
    rng = np.random.default_rng(args.seed)
    chosen = {ok: [picks[ok][j] for j in sorted(rng.choice(len(picks[ok]), min(args.n, len(picks[ok])), replace=False))]
              for ok in picks}
    cols = max(1, max(len(v) for v in chosen.values()))  # a judge that rejected nothing: an empty block
    fig, axes = plt.subplots(4, cols, figsize=(1.45 * cols, 6.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for block, ok in enumerate((True, False)):
        for c, (key, i, called) in enumerate(chosen[ok]):
            rec = json.loads((exp / "trials" / f"{key}.json").read_text())
            ds = _model_data(cfg.models[rec["model"]], cfg.demo, cfg.data_dir)
            with np.load(exp / "trials" / f"{key}.npz", allow_pickle=False) as z:
                poison = z["poisons"][i]
            base = ds.x_train[rec["base_indices"][i]]
            name = ds.classes[called] if called >= 0 else "not in the task"
            if not ok and called == rec["base_class"]:  # the network said the base: the k-NN vote rejected it
                name += " (k-NN: not)"
            axes[2 * block, c].imshow(base)
            axes[2 * block, c].set_title(f"base: {ds.classes[rec['base_class']]}", fontsize=7)
            axes[2 * block + 1, c].imshow(poison)
            axes[2 * block + 1, c].set_title(f"{'accepted' if ok else 'REJECTED'}\njudge: {name}", fontsize=7)
    fig.suptitle(f"{exp.name}: poisons the {args.judge} judge accepted (rows 1-2) and rejected (rows 3-4), "
                 f"each under its base; {100 * len(picks[True]) / max(1, len(picks[True]) + len(picks[False])):.0f}% accepted",
                 fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(args.out)


if __name__ == "__main__":
    main()
