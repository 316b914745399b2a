"""Success against budget: how often feature collision poisons each victim, and how clean-label its
poisons stay, as the l_inf budget grows.

    POISONLAB_DATA_DIR=DIR python bench/bench_budget.py --dataset mnist --pairs 50 \
        --eps 0.05 0.1 0.15 0.2 0.3 --out bench/results/budget_mnist.json

Every (pair, budget, model) runs through ``core.pipeline``: pair ``p`` is planned once from
``default_rng([seed, p])`` (target correct for every model, judged bases, clean subset, stratified
test set) and reused for every budget and model, so the curves are paired. Resumable: finished
points are kept in the output file. ``--figure`` writes a PNG next to it (matplotlib).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from core.attacks import settings_for
from core.checkpoints import CHECKPOINT_DIR, SUITES, load_checkpoint, shipped_pair
from core.data import load_dataset
from core.judge import load_judge
from core.pipeline import FeatureBank, correct_targets, plan_trial, run_trial
from core.stats import wilson_interval
from core.victim import Retraining

MODELS = {d: shipped_pair(d) for d in SUITES}  # the high-d (softmax, LGM) pair of each data set


def summarise(trials: list[dict]) -> list[dict]:
    """Per (model, budget): success with its 95% interval and the share of clean-label poisons."""
    rows = []
    for key in sorted({(t["model"], t["eps"]) for t in trials}):
        ts = [t for t in trials if (t["model"], t["eps"]) == key]
        wins = sum(t["success"] for t in ts)
        clean_wins = sum(t["success"] and t["clean_label"] for t in ts)
        rows.append({"model": key[0], "eps": key[1], "pairs": len(ts), "successes": wins, "rate": wins / len(ts),
                     "ci95": list(wilson_interval(wins, len(ts))),
                     "clean_label_rate": float(np.mean([c for t in ts for c in t["poison_clean_label"]])),
                     "clean_label_success": clean_wins,
                     "mean_feature_distance": float(np.mean([t["feature_distance"] for t in ts]))})
    return rows


def figure(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for model in sorted({r["model"] for r in rows}):
        rs = sorted((r for r in rows if r["model"] == model), key=lambda r: r["eps"])
        eps = [r["eps"] for r in rs]
        rate = np.array([r["rate"] for r in rs])
        err = np.array([[r["rate"] - r["ci95"][0], r["ci95"][1] - r["rate"]] for r in rs]).T
        ax1.errorbar(eps, 100 * rate, yerr=100 * err, marker="o", capsize=3, label=model)
        ax2.plot(eps, [100 * r["clean_label_rate"] for r in rs], marker="o", label=model)
    ax1.set(xlabel="l_inf budget (pixels in [0, 1])", ylabel="victims poisoned (%)", title="attack success, 95% CI",
            ylim=(-3, 103))
    ax2.axhline(90, color="grey", linestyle=":", linewidth=1)
    ax2.set(xlabel="l_inf budget (pixels in [0, 1])", ylabel="poisons judged clean-label (%)",
            title="clean-label poisons (judge: reference net + pixel k-NN)", ylim=(-3, 103))
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist", choices=list(MODELS))
    ap.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1, 0.15, 0.2, 0.3])
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--first-pair", type=int, default=0, help="start here (split a sweep over processes)")
    ap.add_argument("--n-poisons", type=int, default=5)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--attack", default="fc")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--figure", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    state = json.loads(out.read_text()) if out.is_file() else {"trials": []}
    done = {(t["model"], t["eps"], t["pair"]) for t in state["trials"]}
    ds = load_dataset(args.dataset)
    judge = load_judge(ds)
    models = {name: load_checkpoint(CHECKPOINT_DIR / f"{name}.pt")[0] for name in MODELS[args.dataset]}
    candidates = correct_targets(list(models.values()), ds)
    banks = {name: FeatureBank.compute(m, ds) for name, m in models.items()}
    t0 = time.perf_counter()
    for pair in range(args.first_pair, args.pairs):
        plan = plan_trial(ds, (args.seed, pair), candidates, n_poisons=args.n_poisons, judge=judge)
        for eps in args.eps:
            for name, model in models.items():
                if (name, eps, pair) in done:
                    continue
                knobs = settings_for(args.attack, ds.name, iters=args.iters, eps=eps, trial_seed=pair,
                                     record_every=args.iters)
                r = run_trial(model, ds, plan, args.attack, knobs, judge=judge, victim=Retraining(seed=pair),
                              bank=banks[name])
                state["trials"].append({"model": name, "eps": eps, "pair": pair, "target_index": plan.target_index,
                                        "base_class": plan.base_class, "success": r.victims["none"].success,
                                        "clean_label": r.clean_label,
                                        "poison_clean_label": r.verdict.clean_label.tolist(),
                                        "feature_distance": float(r.poisons.final_feature_distance.mean()),
                                        "craft_s": round(r.poisons.time_s, 2)})
        state.update(config=vars(args), rows=summarise(state["trials"]),
                     wall_s_this_run=round(time.perf_counter() - t0, 1), torch=torch.__version__)
        out.write_text(json.dumps(state, indent=1) + "\n")
        print(f"pair {pair + 1}/{args.pairs} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    for r in state["rows"]:
        print(json.dumps({k: r[k] for k in ("model", "eps", "pairs", "rate", "ci95", "clean_label_rate",
                                            "clean_label_success")}))
    if args.figure:
        figure(state["rows"], out.with_suffix(".png"), f"{args.dataset}: {args.attack}, {args.n_poisons} poisons, "
                                                        f"{args.iters} iterations, transfer victim, {args.pairs} pairs")


if __name__ == "__main__":
    main()
