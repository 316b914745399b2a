"""REPRODUCTION section 10's ladder table, from a shipped ``ladder.json`` (``core.ladder``).

    python bench/ladder_table.py checkpoints/ladders/newclasses_cifar10_k50 [--min-trials 8]

One row per (model, filter, attack): the static attack, each adaptive rung aimed at the filter's own
statistic and each rung aimed at another filter's (``others``), with the share of poisons the filter
flags, targets flipped with no filter and behind it ("k of n", Wilson 95%), and for adaptive rungs
the pairing with the static attack on the same targets (flipped only by this attack : only by the
static one, exact McNemar p). Rungs with fewer than ``--min-trials`` trials are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.report import label, rival_aimed_at


def table(ladder: dict, min_trials: int = 1) -> str:
    head = ("| model | filter | attack | trials | flagged | no filter | behind the filter | vs static (only this : "
            "only static, p) |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    rows = [r for r in ladder["rows"] + ladder.get("others", []) if r["trials"] >= min_trials]
    order = {d: i for i, d in enumerate(ladder["filters"])}
    for r in sorted(rows, key=lambda r: (r["model"], order[r["filter"]], r["stealth"] != rows_stealth(ladder, r),
                                         r["weight"])):
        attack = "static" if r["weight"] == 0 else f"aimed at {rival_aimed_at(r)}, w = {r['weight']:g}"
        s, u = r["success_filtered"], r["success_unfiltered"]
        v = r.get("vs_static")
        lines.append(f"| {r['model']} | {label(r['filter'])} | {attack} | {r['trials']} | "
                     f"{100 * r['flagged']['share']:.0f}% | {u['successes']} of {r['trials']} | "
                     f"{s['successes']} of {r['trials']} ({100 * s['ci95'][0]:.0f}-{100 * s['ci95'][1]:.0f}%) | "
                     + (f"{v['only_adaptive']} : {v['only_static']}, p = {v['p']:.2g}" if v else "") + " |")
    return "\n".join(lines)


def rows_stealth(ladder: dict, row: dict) -> str:
    """The stealth term of the filter's own curve (its rows' stealth)."""
    return next(r["stealth"] for r in ladder["rows"] if r["filter"] == row["filter"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ladder", help="a ladder folder (holding ladder.json)")
    ap.add_argument("--min-trials", type=int, default=1)
    args = ap.parse_args()
    print(table(json.loads(Path(args.ladder, "ladder.json").read_text()), args.min_trials))


if __name__ == "__main__":
    main()
