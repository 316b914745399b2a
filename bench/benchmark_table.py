"""The "Against the benchmark" tables of REPRODUCTION.md, from the shipped strong-attack grids.

    python bench/benchmark_table.py [--grids checkpoints/experiments/newclasses_cifar10 ...]

Table 1 sets each grid's own victim (the benchmark's re-initialised linear head, SGD recipe) on
softmax and on LGM features beside the poisoning benchmark's white-box transfer row (Schwarzschild
et al., CIFAR-10, FC 22% / CP 33% / BP 85%), with the paired exact McNemar p-value of softmax
against LGM on the same trials. Table 2 holds every head control of a grid against the LGM model's
own victim on the same trials. Rates are over the trials finished so far (each grid is resumable);
"clean-label" counts the successes where both judges passed every poison. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.report import fmt_rate, load_trials, outcomes, paired
from core.stats import wilson_interval

BENCHMARK_ROW = {"fc": 0.22, "cp": 0.33, "bp": 0.85}  # "Just How Toxic is Data Poisoning?", Table 1, white-box
ATTACKS = ("fc", "cp", "bp")


def _rate(wins: int, n: int) -> str:
    return "-" if n == 0 else f"{wins}/{n} = {fmt_rate(wins / n, wilson_interval(wins, n))}"


def _clean_wins(records: list[dict], model: str, attack: str, k: int, victim: str | None = None) -> int:
    n = 0
    for r in records:
        if r["model"] != model or r["attack"] != attack or r["n_poisons"] != k:
            continue
        res = r["defences"] if victim is None else r.get("victims", {}).get(victim, {})
        n += bool(res.get("none", {}).get("success") and r.get("clean_label"))
    return n


def main_table(grids: dict[str, list[dict]], k: int) -> str:
    lines = ["| setting | victim | " + " | ".join(a.upper() for a in ATTACKS) + " |",
             "|---|---|" + "---|" * len(ATTACKS),
             "| the benchmark (ResNet-18 pretrained on CIFAR-100, 10-class victim, 100 setups) | linear head | "
             + " | ".join(f"{100 * BENCHMARK_ROW[a]:.0f}%" for a in ATTACKS) + " |"]
    for name, records in grids.items():
        soft, lgm = outcomes(records, "softmax"), outcomes(records, "lgm")
        for model, mine in (("softmax", soft), ("lgm", lgm)):
            cells = []
            for a in ATTACKS:
                keys = [key for key in mine if key[0] == a and key[1] == k]
                wins = sum(mine[key] for key in keys)
                cell = _rate(wins, len(keys))
                if keys:
                    cell += f", clean-label {_clean_wins(records, model, a, k)}"
                if model == "lgm" and keys:
                    cell += f"; vs softmax p = {paired(soft, lgm, a, k)['p']:.2g}"
                cells.append(cell)
            lines.append(f"| {name} | linear head on {model} features | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def controls_table(name: str, records: list[dict], k: int) -> str:
    """Every victim of a grid (own and controls, both models) against the LGM model's own victim."""
    victims = sorted({v for r in records for v in r.get("victims", {})})
    own = records[0].get("victim_name", "warm") if records else "warm"
    lgm = outcomes(records, "lgm")
    attacks = [a for a in ATTACKS if any(r["attack"] == a for r in records)]
    lines = [f"| {name}: victim | " + " | ".join(f"{a.upper()} flipped; vs LGM {own} (McNemar p)" for a in attacks)
             + " |", "|---|" + "---|" * len(attacks)]
    for model in ("softmax", "lgm"):
        for victim in [None] + victims:
            mine = outcomes(records, model, victim)
            if not mine:
                continue
            cells = []
            for a in attacks:
                c = paired(mine, lgm, a, k)
                cells.append("-" if not c["pairs"] else f"{c['left']}/{c['pairs']} vs {c['right']}; p = {c['p']:.2g}")
            lines.append(f"| {model} / {victim or own} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", nargs="*", default=["checkpoints/experiments/benchmark_cifar10",
                                                   "checkpoints/experiments/newclasses_cifar10"])
    ap.add_argument("--controls", nargs="*", default=["checkpoints/replays/cifar10_controls",
                                                      "checkpoints/replays/fashion_mnist_controls",
                                                      "checkpoints/replays/default_controls"],
                    help="replays of the shipped 5-poison experiments with head controls")
    ap.add_argument("--poisons", type=int, default=25)
    ap.add_argument("--json", default=None, help="also write the paired counts here")
    args = ap.parse_args()
    names = {"benchmark_cifar10": "ours: ResNet-20 trained on all of CIFAR-10 (the victim's classes)",
             "newclasses_cifar10": "ours: ResNet-20 pretrained on 5 other CIFAR-10 classes, 5-class victim"}
    grids = {names.get(Path(g).name, Path(g).name): load_trials(g) for g in args.grids if Path(g, "trials").is_dir()}
    print(main_table(grids, args.poisons))
    for name, records in grids.items():
        print(controls_table(name, records, args.poisons))
    for folder in args.controls:
        if Path(folder, "trials").is_dir():
            print(controls_table(Path(folder).name, load_trials(folder), 5))
    if args.json:
        Path(args.json).write_text(json.dumps({n: len(r) for n, r in grids.items()}) + "\n")


if __name__ == "__main__":
    main()
