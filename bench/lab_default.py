"""Choose the Poison lab's first press by measurement: the defaults a class sees when it presses the
button without changing anything must show something worth teaching.

    POISONLAB_DATA_DIR=DIR python bench/lab_default.py [--dataset mnist] [--space 2-D] [--max-runs 60]

Runs the lab's own pipeline (``core.lab.run_lab_pair``: the embedded sample, its judge, 500 clean
images, the lab's seed 0) with the lab's default attack settings over targets in a fixed order
(by class, then by index among the test images both models classify correctly, the order the
lab's "Which one of that class" counts) and every base class, and stops at the first that meets
the rule (``RULE``). Writes ``bench/results/lab_default_<dataset>_<space>.json`` with every run it
tried; the Poison lab opens on the chosen target and base class and says why.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RULE = ("the first target (by class, then by index) and base class for which the lab's defaults poison "
        "the softmax victim with every poison judged clean-label, while the LGM victim is not poisoned "
        "and the LGM filter catches at least one of its poisons")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--space", default="2-D", choices=["2-D", "high-d"])
    p.add_argument("--max-runs", type=int, default=60)
    p.add_argument("--per-class", type=int, default=3, help="targets tried per class")
    p.add_argument("--poisons", type=int, default=5)
    p.add_argument("--iters", type=int, default=200)
    args = p.parse_args(argv)

    import torch

    from core.checkpoints import list_checkpoints, load_checkpoint, read_meta
    from core.data import load_demo
    from core.judge import load_judge
    from core.lab import LAB_CLEAN, LAB_TEST, lab_runs, run_lab_pair
    from core.pipeline import correct_targets, plan_trial

    torch.set_num_threads(2)
    pair = {}
    for path in list_checkpoints():
        cfg = read_meta(path)["config"]
        if cfg["dataset"] == args.dataset and (cfg["feat_dim"] == 2) == (args.space == "2-D"):
            pair.setdefault(cfg["head"], str(path))
    models = {h: load_checkpoint(pair[h])[0] for h in ("softmax", "lgm")}
    ds = load_demo(args.dataset)
    judge = load_judge(ds)
    targets = correct_targets(list(models.values()), ds)
    runs, chosen = [], None
    for t_class in range(len(ds.classes)):
        pool = np.intersect1d(np.flatnonzero(ds.y_test == t_class), targets)
        for k in range(min(args.per_class, len(pool))):
            for base in (c for c in range(len(ds.classes)) if c != t_class):
                if len(runs) >= args.max_runs or chosen is not None:
                    break
                plan = plan_trial(ds, 0, targets, n_poisons=args.poisons, n_clean=LAB_CLEAN, n_test=LAB_TEST,
                                  target_index=int(pool[k]), base_class=base, judge=judge)
                lab = lab_runs(models, "fc", args.dataset, trial_seed=0, iters=args.iters,
                               record_every=max(1, args.iters // 40))
                t0 = time.perf_counter()
                res = run_lab_pair(lab, ds, plan, judge=judge)
                row = {"target_class": t_class, "which": k, "target_index": int(pool[k]), "base_class": base,
                       "wall_s": round(time.perf_counter() - t0, 2)}
                for head, r in res.items():
                    own = [n for n in r.victims if n != "none"][0]
                    row[head] = {"poisoned": bool(r.victims["none"].success), "clean_label": int(r.verdict.clean_label.sum()),
                                 "filtered_poisoned": bool(r.victims[own].success),
                                 "caught": len(r.poisons.poisons) - r.victims[own].poisons_kept}
                runs.append(row)
                print(json.dumps(row), flush=True)
                s, lg = row["softmax"], row["lgm"]
                if s["poisoned"] and s["clean_label"] == args.poisons and not lg["poisoned"] and lg["caught"] > 0:
                    chosen = row
    out = {"rule": RULE, "dataset": args.dataset, "space": args.space, "models": pair, "poisons": args.poisons,
           "iters": args.iters, "seed": 0, "chosen": chosen, "runs": runs,
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = ROOT / "bench" / "results" / f"lab_default_{args.dataset}_{args.space.replace('-', '').lower()}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"chosen": chosen, "tried": len(runs), "out": str(path)}))
    return out


if __name__ == "__main__":
    main()
