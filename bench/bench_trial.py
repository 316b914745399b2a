"""What one experiment trial costs: craft, score with every defence, retrain one victim per defence.

    POISONLAB_DATA_DIR=DIR python bench/bench_trial.py [--threads 1]

Runs trial 0 of the default experiment's grid (MNIST d = 64, 5 poisons, 300 iterations, the
clean-label budget, judged) through ``core.pipeline`` for the
cases whose cost differs: softmax vs LGM head (the LGM head's retraining is the dearer), a polytope
attack, and the end-to-end victim. Prints wall seconds per trial and the crafting share.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from core.experiments import ExperimentConfig, candidate_targets, experiment_trial

CASES = [("softmax", "fc", "transfer"), ("lgm", "fc", "transfer"), ("softmax", "cp", "transfer"),
         ("softmax", "fc", "end2end")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1, help="torch threads (experiments use 1 per worker)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {"softmax": "checkpoints/mnist_softmax_d64.pt", "lgm": "checkpoints/mnist_lgm_d64.pt"}
    cfg = ExperimentConfig(models=models, attacks=("fc", "cp"), settings=("transfer", "end2end"), trials=1, iters=300)
    targets = candidate_targets(cfg)
    rows = []
    for model, attack, setting in CASES:
        t0 = time.perf_counter()
        record, _ = experiment_trial(cfg, targets, model, attack, 5, setting, 0)
        rows.append({"model": model, "attack": attack, "setting": setting,
                     "trial_s": round(time.perf_counter() - t0, 1), "craft_s": record["craft_s"]})
    print(json.dumps({"threads": args.threads, "torch": torch.__version__, "trials": rows}, indent=2))


if __name__ == "__main__":
    main()
