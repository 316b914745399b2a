"""Choose the Poison lab's first press by measurement: the defaults a class sees when it presses the
button without changing anything must show something worth teaching.

    POISONLAB_DATA_DIR=DIR python bench/lab_default.py [--dataset mnist] [--space 2-D] [--max-runs 60]
        [--order margin] [--iters 100] [--ship]

Runs the lab's own pipeline (``core.lab.run_lab_pair``: the embedded sample, its judge, 500 clean
images, the lab's seed 0) with the lab's default attack settings over targets in a fixed order (``ORDERS``: by class and
index, or nearest another class first), and stops at the first that meets the rule (``RULE``) and
whose random-noise control poisons neither victim. Writes
``bench/results/lab_default_<dataset>_<space>[_<attack>_<order>].json`` with every run it tried;
``--ship`` writes the chosen press to ``checkpoints/lab_defaults.json`` (``core.lab.LabDefault``),
and the Poison lab opens on it and says why.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RULE = ("the first target and base class, in the search's order, for which the lab's defaults poison "
        "the softmax victim, every poison of both models judged clean-label, while the LGM victim is not poisoned "
        "(and still calls the target by its own class) and the LGM filter catches at least one of its poisons")
ORDERS = {"index": "targets by class, then by index; every other class as the base",
          "margin": "targets by the softmax model's margin over its runner-up class, smallest first (the ones "
                    "nearest another class's region); that runner-up class as the base"}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--space", default="2-D", choices=["2-D", "high-d"])
    p.add_argument("--max-runs", type=int, default=60)
    p.add_argument("--per-class", type=int, default=3, help="targets tried per class")
    p.add_argument("--poisons", type=int, default=5)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--attack", default="fc")
    p.add_argument("--ship", action="store_true", help="write the chosen press to checkpoints/lab_defaults.json")
    p.add_argument("--order", default="index", choices=list(ORDERS),
                   help="; ".join(f"{k}: {v}" for k, v in ORDERS.items()))
    args = p.parse_args(argv)

    import torch

    from core.checkpoints import list_checkpoints, load_checkpoint, read_meta
    from core.data import load_demo
    from core.judge import default_judge
    from core.pipeline import TooFewBases, correct_targets

    torch.set_num_threads(2)
    pair = {}
    for path in list_checkpoints():
        cfg = read_meta(path)["config"]
        if cfg["dataset"] == args.dataset and (cfg["feat_dim"] == 2) == (args.space == "2-D"):
            pair.setdefault(cfg["head"], str(path))
    models = {h: load_checkpoint(pair[h])[0] for h in ("softmax", "lgm")}
    ds = load_demo(args.dataset)
    judge = default_judge(ds)
    targets = correct_targets(list(models.values()), ds)
    runs, chosen = [], None
    for t_class, k, target_index, base in _candidates(args, ds, targets, models["softmax"]):
        if len(runs) >= args.max_runs or chosen is not None:
            break
        row = {"target_class": t_class, "which": k, "target_index": target_index, "base_class": base}
        try:
            row.update(_run(models, ds, judge, targets, args.attack, args, target_index, base))
        except TooFewBases as exc:  # the embedded sample holds too few judged images of that class
            runs.append({**row, "skipped": str(exc)})
            continue
        s, lg = row["softmax"], row["lgm"]
        # "not poisoned" alone let through an LGM victim that called the target a third class after
        # retraining (MNIST 2-D, 2026-12-02): a class cannot be shown that as the defence working
        if (s["poisoned"] and s["clean_label"] == lg["clean_label"] == args.poisons and not lg["poisoned"]
                and lg["called"] == t_class and lg["caught"] > 0):
            # the control: random-sign poisons of the same budget on the same plan; a target so near
            # the boundary that retraining alone moves it would flip here too, and is not a lesson
            row["noise_control"] = _run(models, ds, judge, targets, "noise", args, target_index, base)
            if not any(row["noise_control"][h]["poisoned"] for h in models):
                chosen = row
        runs.append(row)
        print(json.dumps(row), flush=True)
    out = {"rule": RULE, "dataset": args.dataset, "space": args.space, "models": pair, "poisons": args.poisons,
           "attack": args.attack, "order": args.order, "order_rule": ORDERS[args.order], "iters": args.iters,
           "seed": 0, "chosen": chosen, "runs": runs, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    tag = "" if (args.attack, args.order) == ("fc", "index") else f"_{args.attack}_{args.order}"
    path = ROOT / "bench" / "results" / f"lab_default_{args.dataset}_{args.space.replace('-', '').lower()}{tag}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    if chosen is not None and args.ship:
        from core.lab import LabDefault, save_lab_default
        save_lab_default(LabDefault(
            dataset=args.dataset, space=args.space, models={h: Path(m).name for h, m in pair.items()},
            target_index=chosen["target_index"], base_class=chosen["base_class"], attack=args.attack,
            n_poisons=args.poisons, iters=args.iters,
            why=f"{RULE}; {ORDERS[args.order]}; random-noise poisons on the same plan poison neither victim",
            measured={k: chosen[k] for k in ("softmax", "lgm", "noise_control", "wall_s")},
            source=str(path.relative_to(ROOT))))
    print(json.dumps({"chosen": chosen, "tried": len(runs), "out": str(path)}))
    return out


def _run(models, ds, judge, targets, attack: str, args, target_index: int, base: int) -> dict:
    """One press of the lab (seed 0) on this target and base: what each model's victims did."""
    from core.lab import LAB_CLEAN, LAB_TEST, lab_runs, run_lab_pair
    from core.pipeline import plan_trial

    plan = plan_trial(ds, 0, targets, n_poisons=args.poisons, n_clean=LAB_CLEAN, n_test=LAB_TEST,
                      target_index=target_index, base_class=base, judge=judge)
    lab = lab_runs(models, attack, args.dataset, trial_seed=0, n_poisons=args.poisons, iters=args.iters,
                   record_every=max(1, args.iters // 40))
    t0 = time.perf_counter()
    res = run_lab_pair(lab, ds, plan, judge=judge, banks=_banks(models, ds))
    row: dict = {"wall_s": round(time.perf_counter() - t0, 2)}
    for head, r in res.items():
        own = [n for n in r.victims if n != "none"][0]
        row[head] = {"poisoned": bool(r.victims["none"].success), "clean_label": int(r.verdict.clean_label.sum()),
                     "filtered_poisoned": bool(r.victims[own].success),
                     "caught": len(r.poisons.poisons) - r.victims[own].poisons_kept,
                     "called": int(r.victims["none"].outcome.pred_after),
                     "filtered_called": int(r.victims[own].outcome.pred_after)}
    return row


_BANKS: dict = {}


def _banks(models: dict, ds) -> dict:
    """The models' features of the sample, computed once per model (the dashboard keeps them too)."""
    from core.models import extract_features
    from core.pipeline import FeatureBank

    for m in models.values():
        if id(m) not in _BANKS:
            _BANKS[id(m)] = FeatureBank(extract_features(m, ds.x_train).numpy(), extract_features(m, ds.x_test).numpy())
    return {h: _BANKS[id(m)] for h, m in models.items()}


def _candidates(args, ds, targets: np.ndarray, softmax):
    """(target class, its index among the lab's choosable targets of that class, test index, base class)
    in the order ``args.order`` names."""
    from core.models import predict_logits

    def which(i: int) -> int:  # the lab's "Which one of that class": rank among that class's candidates
        return int(np.searchsorted(np.intersect1d(np.flatnonzero(ds.y_test == ds.y_test[i]), targets), i))

    if args.order == "index":
        for t_class in range(len(ds.classes)):
            pool = np.intersect1d(np.flatnonzero(ds.y_test == t_class), targets)
            for k in range(min(args.per_class, len(pool))):
                for base in (c for c in range(len(ds.classes)) if c != t_class):
                    yield t_class, k, int(pool[k]), base
        return
    logits = predict_logits(softmax, ds.x_test[targets]).numpy()
    top = logits[np.arange(len(targets)), ds.y_test[targets]]
    rest = logits.copy()
    rest[np.arange(len(targets)), ds.y_test[targets]] = -np.inf
    for j in np.argsort(top - rest.max(1), kind="stable"):
        i = int(targets[j])
        yield int(ds.y_test[i]), which(i), i, int(rest[j].argmax())


if __name__ == "__main__":
    main()
