"""Bullseye polytope's crafting cost: one benchmark-sized trial (25 poisons, 8/255, 1200 Adam
steps, as the poisoning benchmark's ``craft_poisons_bp.py``) against the objective's own floor.

    python bench/bench_bp.py [--checkpoint checkpoints/cifar10_softmax_d128.pt] [--trials 2]

Each iteration of BP is one forward and one backward pass of the 25 poisons through the frozen
network plus Adam and the projection; the floor is that forward and backward alone (input
gradients only, no attack loop) through the same network the attack runs (``frozen_copy``: batch
norms folded), timed in the same run before and after each craft; ``unfolded_network_ms`` is the
same pass through the model as trained. Reports the wall time of
each craft, its time per iteration, the floor's median and their ratio, and the load average
before and after (the machine is often shared: read the numbers beside it). Also CP (convex
weights, five projected steps on the simplex per iteration) at the same size. Prints JSON.
``--iters 800 --patience 100``: the early stop (a plateau of 100 steps, the best iterate kept),
whose paired check against the benchmark's 1200 steps is ``bench/bench_early_stop.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from core.attacks import get_attack, settings_for
from core.checkpoints import load_checkpoint
from core.data import load_dataset
from core.models import frozen_copy, to_input


def pass_ms(net, x: torch.Tensor, repeats: int) -> float:
    """Median ms of one forward + backward of ``x`` through ``net.features`` (input gradient only)."""
    times = []
    for _ in range(repeats):
        xi = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        (g,) = torch.autograd.grad(net.features(xi).pow(2).sum(), xi)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def floor_ms(model, x: torch.Tensor, repeats: int) -> float:
    """The pass through the network the attack runs (``models.frozen_copy``: batch norms folded)."""
    return pass_ms(frozen_copy(model), x, repeats)


def cpu() -> dict:
    """The processor, and the vector units that decide a convolution's speed on it (the machines
    this project lands on differ: one session's 2 cores ran this pass 2.5-3x slower than another's)."""
    info = {"model": None, "flags": []}
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return info
    for line in text.splitlines():
        if line.startswith("model name") and info["model"] is None:
            info["model"] = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            info["flags"] = sorted(f for f in have if f.startswith(("avx", "amx")) or f == "fma")
            break
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="checkpoints/cifar10_softmax_d128.pt")
    ap.add_argument("--poisons", type=int, default=25)
    ap.add_argument("--iters", type=int, default=1200)
    ap.add_argument("--patience", type=int, default=None,
                    help="the plateau stop (keeps the best iterate); paired check: bench/bench_early_stop.py")
    ap.add_argument("--trials", type=int, default=2, help="seeded target/base draws per attack")
    ap.add_argument("--attacks", nargs="*", default=["bp", "cp"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(args.checkpoint)
    data = load_dataset(meta["config"]["dataset"])
    out = {"checkpoint": args.checkpoint, "poisons": args.poisons, "iters": args.iters, "patience": args.patience,
           "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": cpu(),
           "load_before": os.getloadavg()[0],
           "crafts": []}
    for attack in args.attacks:
        for trial in range(args.trials):
            rng = np.random.default_rng([7, trial])
            target = int(rng.integers(len(data.y_test)))
            base_class = int(rng.choice([c for c in range(len(data.classes)) if c != data.y_test[target]]))
            bases = rng.choice(np.flatnonzero(data.y_train == base_class), args.poisons, replace=False)
            x = to_input(data.x_train[bases])
            before = floor_ms(model, x, 30)
            settings = settings_for(attack, data.name, trial_seed=trial, iters=args.iters, record_every=args.iters,
                                    patience=args.patience)
            t0 = time.perf_counter()
            p = get_attack(attack).craft(model, data.x_train[bases], data.x_test[target:target + 1],
                                         np.full(args.poisons, base_class), int(data.y_test[target]), settings)
            wall = time.perf_counter() - t0
            after = floor_ms(model, x, 30)
            plain = pass_ms(model, x, 30)  # the model as trained: what the folding saves
            steps = p.params["iterations_run"]
            per_iter = 1000 * wall / steps
            fl = (before + after) / 2
            out["crafts"].append({"attack": attack, "trial": trial, "wall_s": round(wall, 2), "steps": steps,
                                  "ms_per_iter": round(per_iter, 2), "floor_ms": round(fl, 2),
                                  "unfolded_network_ms": round(plain, 2),
                                  "ratio": round(per_iter / fl, 3),
                                  "mean_feature_distance": float(p.final_feature_distance.mean())})
            print(json.dumps(out["crafts"][-1]), flush=True)
    out["load_after"] = os.getloadavg()[0]
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
