"""Dose-response: how many poisons flip each victim, and the exact-copy sanity curve that tells a
Gaussian head's resistance apart from a filter's.

    POISONLAB_DATA_DIR=DIR python bench/bench_dose.py --dataset mnist --pairs 10 \
        --out bench/results/dose_mnist.json --figure

Per pair (planned by ``core.pipeline`` from ``default_rng([seed, p])``, judged bases):

- *poisons*: ``max(counts)`` feature-collision poisons are crafted once per model at the data set's
  clean-label budget; the victim with ``k`` poisons is retrained on the first ``k`` of them (each
  poison is crafted independently, so the first ``k`` are a k-poison attack);
- *exact copies*: the label-flip sanity test, with no crafting at all: ``m`` copies of the target's
  own feature, labelled as the base class, join the clean features and the head is retrained. It
  is the strongest collision possible; a head that resists it resists by its structure.

Victims (transfer, no filter): by default softmax, softmax with L2 weight decay on the retrained
head (the regularised softmax: is any regularisation enough?), and LGM. ``--victims`` takes the
head controls instead, as ``poisonlab replay`` does ({name: {"head": VICTIM_HEADS key, knob: value}}),
each retrained on both models' features where it applies (the CIFAR-10 run: every control head):

    POISONLAB_DATA_DIR=DIR python bench/bench_dose.py --dataset cifar10 --pairs 10 --iters 120 \
        --victims "$(cat bench/configs/dose_controls.json)" --out bench/results/dose_cifar10.json --figure
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from core.attacks import craft, settings_for
from core.checkpoints import CHECKPOINT_DIR, SUITES, load_checkpoint, shipped_pair
from core.data import load_dataset
from core.judge import load_judge
from core.pipeline import FeatureBank, correct_targets, plan_trial
from core.stats import wilson_interval
from core.models import extract_features
from core.experiments import BANK_CACHE, victim_spec
from core.victim import HeadData, Retraining, WarmHeadSettings, retrain_victim

MODELS = {d: shipped_pair(d) for d in SUITES}  # the high-d (softmax, LGM) pair of each data set


def _victims(names: tuple[str, str], wd: float) -> list[tuple[str, str, float]]:
    """(victim label, model name, head weight decay)."""
    softmax, lgm = names
    return [("softmax", softmax, 0.0), (f"softmax, weight decay {wd:g}", softmax, wd), ("lgm", lgm, 0.0)]


def _controls(spec: str, names: tuple[str, str], models: dict) -> list[tuple[str, str, Retraining]]:
    """(victim label, model name, recipe) for every control head on every model it applies to."""
    out = []
    for name, raw in json.loads(spec).items():
        head, settings = victim_spec(raw, f"--victims[{name!r}]")
        for model_name in names:
            recipe = Retraining(head=head, head_settings=settings)
            if recipe.why_not(models[model_name].head) is None:
                kind = "lgm" if "lgm" in model_name else "softmax"
                out.append((f"{name} on {kind} features", model_name, recipe))
    return out


def summarise(trials: list[dict]) -> list[dict]:
    rows = []
    for key in sorted({(t["kind"], t["victim"], t["count"]) for t in trials}):
        ts = [t for t in trials if (t["kind"], t["victim"], t["count"]) == key]
        wins = sum(t["success"] for t in ts)
        row = {"kind": key[0], "victim": key[1], "count": key[2], "pairs": len(ts), "successes": wins,
               "rate": wins / len(ts), "ci95": list(wilson_interval(wins, len(ts))),
               "clean_acc_after": float(np.mean([t["clean_acc_after"] for t in ts]))}
        if key[0] == "poisons":
            row["clean_label_rate"] = float(np.mean([t["clean_label_rate"] for t in ts]))
        rows.append(row)
    return rows


def figure(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind, xlabel in ((axes[0], "poisons", "clean-label poisons in the training set"),
                             (axes[1], "copies", "exact copies of the target's feature, labelled as the base")):
        for victim in sorted({r["victim"] for r in rows if r["kind"] == kind}):
            rs = sorted((r for r in rows if r["kind"] == kind and r["victim"] == victim), key=lambda r: r["count"])
            x = [r["count"] for r in rs]
            rate = np.array([r["rate"] for r in rs])
            err = np.array([[r["rate"] - r["ci95"][0], r["ci95"][1] - r["rate"]] for r in rs]).T
            ax.errorbar(x, 100 * rate, yerr=100 * err, marker="o", capsize=3, label=victim)
        ax.set(xscale="log", xlabel=xlabel, title=kind, ylim=(-3, 103))
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("victims poisoned (%), 95% CI")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="mnist", choices=list(MODELS))
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 5, 10, 25, 50, 100, 200])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=1e-2, help="L2 on the regularised softmax head")
    ap.add_argument("--n-clean", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--figure", action="store_true")
    ap.add_argument("--victims", help='JSON {name: {"head": ..., knob: value}}: the control heads, on both models')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    state = json.loads(out.read_text()) if out.is_file() else {"trials": []}
    same = ("dataset", "counts", "iters", "weight_decay", "n_clean", "seed", "victims")
    if state.get("config") and any(state["config"].get(k) != vars(args).get(k) for k in same):
        raise SystemExit(f"{out} holds a run with other settings ({', '.join(same)} must match); use another --out")
    done_pairs = {t["pair"] for t in state["trials"]}
    ds = load_dataset(args.dataset)
    judge = load_judge(ds)
    loaded = {n: load_checkpoint(CHECKPOINT_DIR / f"{n}.pt") for n in MODELS[args.dataset]}
    models = {n: m for n, (m, _) in loaded.items()}
    # the experiments' on-disk feature cache: a data set's features are computed once per model
    banks = {n: FeatureBank.cached(m, ds, BANK_CACHE, meta["sha256"]) for n, (m, meta) in loaded.items()}
    candidates = correct_targets(list(models.values()), ds)
    top = max(args.counts)
    t0 = time.perf_counter()
    for pair in range(args.pairs):
        if pair in done_pairs:
            continue
        plan = plan_trial(ds, (args.seed, pair), candidates, n_poisons=top, n_clean=args.n_clean, judge=judge)
        target = ds.x_test[plan.target_index:plan.target_index + 1]
        x_clean, y_clean = ds.x_train[plan.clean_indices], ds.y_train[plan.clean_indices]
        x_test, y_test = ds.x_test[plan.test_indices], ds.y_test[plan.test_indices]
        poisons = {n: craft(m, "fc", ds.x_train[plan.base_indices], target, np.full(top, plan.base_class),
                            plan.target_label, settings_for("fc", ds.name, iters=args.iters, seed=pair))
                   for n, m in models.items()}
        clean_label = {n: judge.verdict(p.poisons, plan.base_class, exclude=plan.base_indices).clean_label
                       for n, p in poisons.items()}
        if args.victims:
            victims = [(v, n, replace(r, seed=pair)) for v, n, r in _controls(args.victims, MODELS[args.dataset], models)]
        else:
            victims = [(v, n, Retraining(seed=pair, head_settings=WarmHeadSettings(weight_decay=wd)))
                       for v, n, wd in _victims(MODELS[args.dataset], args.weight_decay)]
        for victim, name, victim_recipe in victims:
            model, bank = models[name], banks[name]
            clean_f, test_f = bank.train[plan.clean_indices], torch.from_numpy(bank.test[plan.test_indices])
            for k in args.counts:
                keep = np.arange(top) < k
                outcome, _ = retrain_victim(model, poisons[name], (x_clean, y_clean), (x_test, y_test), victim_recipe,
                                            keep=keep, clean_feats=clean_f, test_feats=test_f)
                state["trials"].append({"kind": "poisons", "victim": victim, "count": k, "pair": pair,
                                        "success": outcome.success, "clean_acc_after": outcome.clean_acc_after,
                                        "clean_label_rate": float(clean_label[name][:k].mean())})
            f_target = extract_features(model, target)
            for m in args.counts:  # the label-flip sanity test: exact copies of the target's feature
                feats = torch.cat([torch.from_numpy(clean_f), f_target.expand(m, -1)])
                labels = torch.as_tensor(np.r_[y_clean, np.full(m, plan.base_class)], dtype=torch.long)
                head = victim_recipe.refit_head(model.head, HeadData(feats, labels))
                with torch.no_grad():
                    pred = int(head(f_target).argmax())
                    acc = float((head(test_f).argmax(1).numpy() == y_test).mean())
                state["trials"].append({"kind": "copies", "victim": victim, "count": m, "pair": pair,
                                        "success": pred == plan.base_class, "clean_acc_after": acc})
        state.update(config=vars(args), rows=summarise(state["trials"]),
                     wall_s_this_run=round(time.perf_counter() - t0, 1), torch=torch.__version__)
        out.write_text(json.dumps(state, indent=1) + "\n")
        print(f"pair {pair + 1}/{args.pairs} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for r in state["rows"]:
        print(json.dumps({k: r[k] for k in ("kind", "victim", "count", "pairs", "rate", "ci95")}))
    if args.figure:
        figure(state["rows"], out.with_suffix(".png"),
               f"{args.dataset}: transfer victims, {args.pairs} target/base pairs, clean-label budget")


if __name__ == "__main__":
    main()
