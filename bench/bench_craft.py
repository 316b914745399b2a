"""Crafting speed: one poison, a batch against one-by-one, and IBM ART's FeatureCollisionAttack.

    python bench/bench_craft.py --checkpoint checkpoints/mnist_softmax_d64.pt [--art]

Poison Frogs' solver (``fc-frogs``). Same model, same target and bases, same objective (ART's
similarity_coeff, on [0, 1] pixels, is our paper-scale beta0 x 255^2, and it applies the same
dimension scaling), same iteration count. ART (`pip install adversarial-robustness-toolbox`) is optional. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from core.attacks import paper_beta, poison_frogs
from core.checkpoints import load_checkpoint
from core.data import load_demo


def _pick(ds, n: int, seed: int):
    rng = np.random.default_rng(seed)
    ti = int(rng.choice(np.flatnonzero(ds.y_test == 3)))
    bases = ds.x_train[rng.choice(np.flatnonzero(ds.y_train == 8), n, replace=False)]
    return bases, ds.x_test[ti:ti + 1]


def ours(model, bases, target, iters: int, beta0: float) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    p = poison_frogs(model, bases, target, np.full(len(bases), 8), 3, iters=iters, beta0=beta0,
                     min_step_frac=0.0, record_every=iters)
    return time.perf_counter() - t0, p.final_feature_distance


def art(model, bases, target, iters: int, beta0: float, lr: float) -> tuple[float, np.ndarray]:
    from art.attacks.poisoning import FeatureCollisionAttack
    from art.estimators.classification import PyTorchClassifier

    class Normalise(torch.nn.Module):
        def forward(self, x):
            return (x - model.mean) / model.std

    seq = torch.nn.Sequential(Normalise(), model.extractor, model.head).eval()
    clf = PyTorchClassifier(seq, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    x_t = (target.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    x_b = (bases.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    attack = FeatureCollisionAttack(clf, x_t, feature_layer=1, max_iter=iters, similarity_coeff=beta0 * 255**2,
                                    learning_rate=lr, verbose=False)
    t0 = time.perf_counter()
    poisons, _ = attack.poison(x_b)
    dt = time.perf_counter() - t0
    with torch.no_grad():
        fp = model.features(torch.from_numpy(poisons))
        ft = model.features(torch.from_numpy(x_t))
    return dt, (fp - ft).norm(dim=1).numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="checkpoints/mnist_softmax_d64.pt")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batch-iters", type=int, default=200)
    ap.add_argument("--beta0", type=float, default=0.25 / 255**2,
                    help="Poison Frogs' beta0 on the paper's 0-255 scale (default: the 0.25 on [0, 1] pixels "
                         "these timings were first measured with)")
    ap.add_argument("--art", action="store_true")
    ap.add_argument("--art-poisons", type=int, default=2)
    ap.add_argument("--art-iters", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    model, meta = load_checkpoint(args.checkpoint)
    ds = load_demo(meta["config"]["dataset"])
    bases, target = _pick(ds, args.batch, args.seed)
    beta = paper_beta(args.beta0, model.config.feat_dim, int(np.prod(bases.shape[1:])))
    res: dict = {"checkpoint": args.checkpoint, "threads": torch.get_num_threads(), "cpu": platform.processor(),
                 "torch": torch.__version__, "beta": beta}
    ours(model, bases[:1], target, 5, args.beta0)  # warm-up
    t, d = ours(model, bases[:1], target, args.iters, args.beta0)
    res["one_poison"] = {"iters": args.iters, "seconds": round(t, 3), "feature_distance": float(d[0])}
    t_batch, d_batch = ours(model, bases, target, args.batch_iters, args.beta0)
    t_single = sum(ours(model, bases[i:i + 1], target, args.batch_iters, args.beta0)[0]
                   for i in range(args.batch))
    res["batch"] = {"n": args.batch, "iters": args.batch_iters,
                    "batched_poisons_per_s": round(args.batch / t_batch, 3),
                    "one_by_one_poisons_per_s": round(args.batch / t_single, 3),
                    "speedup": round(t_single / t_batch, 2), "mean_feature_distance": float(d_batch.mean())}
    if args.art:
        n = args.art_poisons
        t_o, d_o = ours(model, bases[:n], target, args.art_iters, args.beta0)
        res["vs_art"] = {"n_poisons": n, "iters": args.art_iters,
                         "ours": {"poisons_per_s": round(n / t_o, 3), "mean_feature_distance": float(d_o.mean())},
                         "art": []}
        for lr in (0.01, 0.1, 1.0):  # ART's default (127500) assumes 0-255 images; we sweep and report all
            t_a, d_a = art(model, bases[:n], target, args.art_iters, args.beta0, lr)
            res["vs_art"]["art"].append({"learning_rate": lr, "poisons_per_s": round(n / t_a, 3),
                                         "mean_feature_distance": float(d_a.mean())})
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
