"""Reporting on experiments: cell summaries, Markdown tables, the words and names readers see, reading
shipped results and benchmarks.

Kept apart from the runner (``core.experiments``) so that the dashboard and the write-ups read
results without importing anything that runs trials. Nothing here draws: the dashboard's charts of
these rows are in ``pages/figures.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .attacks import ATTACKS, STEALTH, budget_levels
from .checkpoints import CHECKPOINT_DIR, CheckpointError, read_meta
from .defences import label
from .stats import mcnemar_exact, wilson_interval


def fmt_rate(rate: float, ci: tuple[float, float] | list[float]) -> str:
    """"47% (30-64%)": a rate with its 95% interval, as people read it."""
    return f"{100 * rate:.0f}% ({100 * ci[0]:.0f}-{100 * ci[1]:.0f}%)"


def summarise(records: list[dict]) -> list[dict]:
    """Per (model, victim, attack, k, setting, defence): success rate with its Wilson 95% interval,
    how clean-label the poisons were, and detection metrics for filters. ``victim`` is "warm" for
    the experiment's own victim when it is the model's head, warm-started (else its head's name,
    and ``primary`` is True on its rows) and a control's name for the further victims of ``ExperimentConfig.victims`` (same poisons, same filters, another head).

    ``clean_label_rate``: share of the cell's poisons both judges call the base class;
    ``clean_label_success``: trials that succeeded with every poison clean-label (and its rate).
    """
    cells: dict = {}
    for r in records:
        if "skipped" in r:
            continue
        own = r.get("victim_name", "warm")
        victims = {own: r["defences"], **r.get("victims", {})}  # the experiment's own victim, then controls
        for victim, results in victims.items():
            for defence, d in results.items():
                key = (r["model"], victim, r["attack"], r["n_poisons"], r["setting"], defence, victim == own)
                cells.setdefault(key, []).append((r, {**r["defences"][defence], **d}))
    rows = []
    for (model, victim, attack, k, setting, defence, primary), items in sorted(cells.items(), key=lambda kv: (
            kv[0][0], not kv[0][-1], kv[0][1:])):
        n = len(items)
        wins = sum(d["success"] for _, d in items)
        clean_wins = sum(d["success"] and r.get("clean_label", False) for r, d in items)
        judged = [r["judge"]["clean_label"] for r, _ in items if r.get("judge")]
        row = {"model": model, "victim": victim, "primary": primary, "attack": attack, "n_poisons": k,
               "setting": setting, "defence": defence,
               "eps": items[0][0].get("eps"), "trials": n, "successes": wins, "rate": wins / n,
               "ci95": list(wilson_interval(wins, n)),
               "clean_label_rate": float(np.mean(np.concatenate(judged))) if judged else None,
               "clean_label_success": clean_wins, "clean_label_success_rate": clean_wins / n,
               "clean_label_success_ci95": list(wilson_interval(clean_wins, n)),
               "clean_acc_after": float(np.mean([d["clean_acc_after"] for _, d in items])),
               "mean_l2": float(np.mean([r["l2"] for r, _ in items])),
               "mean_feature_distance": float(np.mean([r["feature_distance"] for r, _ in items]))}
        if defence != "none":
            row.update({m: float(np.mean([d[m] for _, d in items]))
                        for m in ("auc", "poisons_flagged", "clean_flagged")})
        rows.append(row)
    return rows


def load_trials(exp_dir: str | Path) -> list[dict]:
    """Every finished trial record of an experiment folder (``DIR/trials/*.json``), skipped ones left out."""
    records = [json.loads(p.read_text()) for p in sorted(Path(exp_dir, "trials").glob("*.json"))]
    return [r for r in records if "skipped" not in r]


def outcomes(records: list[dict], model: str, victim: str | None = None, defence: str = "none") -> dict:
    """{(attack, n_poisons, setting, trial): success} of one victim behind one filter. ``victim``:
    a control's name, or None for the experiment's own victim."""
    out = {}
    for r in records:
        if r["model"] != model:
            continue
        own = r.get("victim_name", "warm")
        results = r["defences"] if victim in (None, own) else r.get("victims", {}).get(victim)
        if results is not None and defence in results:
            out[(r["attack"], r["n_poisons"], r["setting"], r["trial"])] = bool(results[defence]["success"])
    return out


def paired(left: dict, right: dict, attack: str | None = None, n_poisons: int | None = None) -> dict:
    """Two victims on the same trials (same targets, bases and seeds; each model's own poisons):
    successes of each, the discordant pairs and the exact McNemar p-value. Only trials both have."""
    keys = sorted(k for k in set(left) & set(right)
                  if (attack is None or k[0] == attack) and (n_poisons is None or k[1] == n_poisons))
    a, b = [left[k] for k in keys], [right[k] for k in keys]
    return {"pairs": len(keys), "left": sum(a), "right": sum(b),
            "only_left": sum(x and not y for x, y in zip(a, b)), "only_right": sum(y and not x for x, y in zip(a, b)),
            "p": mcnemar_exact(a, b) if keys else 1.0}


def primary_cells(res: dict) -> list[dict]:
    """The cells of an experiment's own victim (its model's warm-started head), without the control
    victims' cells: what the outcome charts compare. Results written before controls existed have
    no ``victim`` key; all their cells are the experiment's own victim's."""
    return [c for c in res.get("cells", []) if c.get("primary", c.get("victim", "warm") == "warm")]


def readable(rows: list[dict]) -> list[dict]:
    """Cells with names a person reads (the dashboard's tables): attack and filter names, not codes,
    and rates as "47% (30-64%)"."""
    out = []
    for r in rows:
        head = r.get("victim", "warm")
        victim = model_name(r["model"]) + ("" if head == "warm" else f" ({head} head)")
        row = {"victim": victim, "filter": label(r["defence"]), "attack": ATTACKS[r["attack"]].label,
               "poisons": r["n_poisons"], "setting": r["setting"],
               "pixel budget": "-" if r.get("eps") is None else f"{budget_levels(r['eps'])} of 255",
               "target flipped (95% CI)": fmt_rate(r["rate"], r["ci95"]),
               "clean-label poisons": ("not judged" if r.get("clean_label_rate") is None
                                       else f"{100 * r['clean_label_rate']:.0f}%"),
               "flipped with clean-label poisons": f"{r.get('clean_label_success', '-')} of {r['trials']}",
               "clean accuracy after": f"{100 * r['clean_acc_after']:.1f}%"}
        if "auc" in r:
            row.update({"poisons caught": f"{100 * r['poisons_flagged']:.0f}%",
                        "clean images dropped": f"{100 * r['clean_flagged']:.1f}%", "AUC": round(r["auc"], 3)})
        out.append(row)
    return out


def markdown_table(rows: list[dict]) -> str:
    head = ("| model | attack | poisons | budget | setting | defence | success (95% CI) | clean-label poisons | "
            "clean-label successes | trials | clean acc | poisons flagged | clean flagged | AUC | poison l2 | "
            "feature distance |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        det = (f"{100 * r['poisons_flagged']:.0f}% | {100 * r['clean_flagged']:.1f}% | {r['auc']:.3f}"
               if "auc" in r else "- | - | -")
        clean = "-" if r["clean_label_rate"] is None else f"{100 * r['clean_label_rate']:.0f}%"
        eps = "-" if r.get("eps") is None else f"{r['eps']:.3g}"
        model = r["model"] + ("" if r.get("victim", "warm") == "warm" else f" / {r['victim']}")
        lines.append(f"| {model} | {r['attack']} | {r['n_poisons']} | {eps} | {r['setting']} | {r['defence']} | "
                     f"{fmt_rate(r['rate'], r['ci95'])} | {clean} | {r['clean_label_success']} | {r['trials']} | "
                     f"{100 * r['clean_acc_after']:.1f}% | {det} | {r['mean_l2']:.2f} | "
                     f"{r['mean_feature_distance']:.2f} |")
    return head + "\n".join(lines) + "\n"


def load_results(root: str | Path | None = None) -> dict[str, dict]:
    """Every finished experiment under ``root`` (default: the shipped ``checkpoints/experiments``),
    by folder name: what ``run_experiment`` wrote to ``results.json``."""
    root = Path(root) if root is not None else CHECKPOINT_DIR / "experiments"
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/results.json"))}


def reproduce_command(name: str, res: dict) -> str:
    """The command that rebuilds shipped experiment ``name`` from its ``results.json`` (``res``): a
    labelled one is a rejudged experiment (``rejudge_experiment``), any other runs its config."""
    lab = res.get("labelled")
    if lab:
        return (f"poisonlab rejudge --experiment checkpoints/experiments/{lab['from']} --judge {lab['judge']} "
                f"--labelled-out checkpoints/experiments/{name}")
    return f"poisonlab experiment --config bench/configs/{name}.json --out DIR"


def experiment_models(res: dict) -> list[dict] | None:
    """The model configs of a finished experiment (from ``load_results``), read from their side files;
    None when a checkpoint is gone or fails its check (the experiment cannot be placed then)."""
    try:
        return [read_meta(p)["config"] for p in res["config"]["models"].values()]
    except (OSError, KeyError, CheckpointError):
        return None


HEAD_NAMES = {"softmax": "Softmax", "lgm": "LGM"}  # the heads' display names, for every page and table


def head_label(head: str, in_sentence: bool = False) -> str:
    """A classifier head ("softmax", "lgm") as readers name it: "Softmax", "LGM"; ``in_sentence``: as
    running text writes it ("the softmax victim", "the LGM victim": an acronym keeps its capitals)."""
    name = HEAD_NAMES[head]
    return name.lower() if in_sentence and not name.isupper() else name


def model_name(name: str) -> str:
    """An experiment's model key as readers name it: "LGM", "Softmax" (other keys unchanged)."""
    return HEAD_NAMES.get(name, name)


def victim_name(victim: str, suffix: str = "") -> str:
    """A benchmark's victim as readers name it: "softmax, weight decay 0.01" -> "Softmax{suffix}, weight
    decay 0.01"; ``suffix`` (" head") only after a known model key."""
    head, _, rest = str(victim).partition(",")
    return model_name(head) + (suffix if head in HEAD_NAMES else "") + (f",{rest}" if rest else "")


def control_outcomes(experiment: str, record: dict, root: str | Path | None = None) -> dict[str, dict] | None:
    """The same poisons against other victims (``poisonlab replay`` into ``replays/<experiment>_controls``,
    ``bench/run_replays.sh``): {victim name: {"success", "pred_after", "clean_acc_after", "spec"}} (``spec``: the victim's
    head and settings as the replay's config gives them) for one
    trial ``record`` (model, attack, n_poisons, setting, trial), the replay's own victim included;
    None when no replay of that trial is shipped."""
    folder = Path(root) if root is not None else CHECKPOINT_DIR / "replays"
    key = f"{record['model']}__{record['attack']}__k{record['n_poisons']}__{record['setting']}__t{int(record['trial']):04d}"
    path = folder / f"{experiment}_controls" / "trials" / f"{key}.json"
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    cfg = json.loads((path.parent.parent / "config.json").read_text())
    specs = cfg.get("victims", {})
    rows = {rec.get("victim_name", "victim"): rec["defences"]["none"], **{n: v["none"] for n, v in rec.get("victims", {}).items()}}
    return {name: {"success": bool(v["success"]), "pred_after": int(v["pred_after"]),
                   "clean_acc_after": float(v["clean_acc_after"]), "spec": specs.get(name, {"head": "warm"})}
            for name, v in rows.items()}


BENCH_RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def load_ladders(root: str | Path | None = None) -> dict[str, dict]:
    """The shipped adaptive ladders (``checkpoints/ladders/NAME/ladder.json``, ``core.ladder``)
    with their static rung's config (models, data set), {name: ladder}; none is fine."""
    base = Path(root) if root else CHECKPOINT_DIR / "ladders"
    out = {}
    for path in sorted(base.glob("*/ladder.json")):
        ladder = json.loads(path.read_text())
        static = path.parent / "static" / "results.json"
        if ladder.get("rows") and static.is_file():
            out[path.parent.name] = {**ladder, "config": json.loads(static.read_text())["config"]}
    return out


def fullest_ladder(ladders: dict[str, dict]) -> str | None:
    """The shipped ladder with the most adaptive trials (the best evidence): where the pages open."""
    return max(ladders, key=lambda n: sum(r["trials"] for r in ladders[n]["rows"] if r["weight"]), default=None)


def stronger_rival(ladder: dict, model: str, defence: str) -> dict | None:
    """The rung aimed at *another* filter's statistic (``ladder["others"]``) that flips more targets
    behind ``defence`` than any rung of its own curve, static included, and, paired by target, more
    than the static attack did (``vs_static``: a rival that merely drew easier targets is none);
    ties: the fewest flagged. None when the filter's own curve is its worst case."""
    own = [r["success_filtered"]["rate"] for r in ladder.get("rows", [])
           if r["model"] == model and r["filter"] == defence]
    rivals = [r for r in ladder.get("others", []) if r["model"] == model and r["filter"] == defence
              and own and r["success_filtered"]["rate"] > max(own)
              and r.get("vs_static", {}).get("only_adaptive", 1) > r.get("vs_static", {}).get("only_static", 0)]
    return max(rivals, key=lambda r: (r["success_filtered"]["rate"], -r["flagged"]["share"]), default=None)


def significant_gain(ladder: dict, model: str, defence: str, alpha: float = 0.05) -> bool:
    """Whether some adaptive rung, aimed at this filter or another, flipped more targets behind
    ``defence`` than the static attack on the same targets, at exact McNemar p < ``alpha``."""
    return any(r["model"] == model and r["filter"] == defence and r.get("vs_static")
               and r["vs_static"]["p"] < alpha and r["vs_static"]["only_adaptive"] > r["vs_static"]["only_static"]
               for r in ladder.get("rows", []) + ladder.get("others", []))


def ladder_sentence(ladder: dict, model: str, defence: str) -> str | None:
    """What one filter's ladder says, in words a teacher can repeat: the static attack's flagged
    share and success behind the filter, then the adaptive weight that flipped the most targets
    behind it (ties: the fewest flagged) and what it cost, then a rival attack that did better."""
    mine = sorted((r for r in ladder["rows"] if r["model"] == model and r["filter"] == defence),
                  key=lambda r: r["weight"])
    static = next((r for r in mine if r["weight"] == 0), None)
    if static is None:
        return None
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    text = (f"{label(defence)}: the static attack flips {static['success_unfiltered']['successes']} of "
            f"{static['trials']} targets with no filter; the filter flags {pct(static['flagged']['share'])} of its "
            f"poisons and {static['success_filtered']['successes']} of {static['trials']} still flip behind it.")
    adaptive = [r for r in mine if r["weight"] > 0]
    if adaptive:
        best = max(adaptive, key=lambda r: (r["success_filtered"]["rate"], -r["flagged"]["share"]))
        text += (f" Knowing the filter, the attacker's best weight (w = {best['weight']:g}) leaves "
                 f"{pct(best['flagged']['share'])} flagged and flips {best['success_filtered']['successes']} of "
                 f"{best['trials']} behind it ({best['success_unfiltered']['successes']} with no filter"
                 f"{_against_static(best)}).")
    rival = stronger_rival(ladder, model, defence)
    if rival:
        text += (f" {'Stronger still' if adaptive else 'An attack aimed at another filter did better'}: the attack "
                 f"aimed at {rival_aimed_at(rival)} (w = {rival['weight']:g}) leaves "
                 f"{pct(rival['flagged']['share'])} flagged here and flips "
                 f"{rival['success_filtered']['successes']} of {rival['trials']} behind this filter"
                 f"{_against_static(rival, ' (')}{')' if rival.get('vs_static') else ''}.")
    return text


def rival_aimed_at(row: dict) -> str:
    """The filter whose statistic an adaptive rung hides from (its stealth term's first filter)."""
    return label(STEALTH[row["stealth"]].filters[0])


def _against_static(row: dict, lead: str = "; ") -> str:
    """An adaptive rung against the static attack behind the same filter, paired by target (``vs_static``
    of ``core.ladder``): what a reader needs to call the difference real or not."""
    v = row.get("vs_static")
    if not v:
        return ""
    return (f"{lead}against the static attack on the same {v['pairs']} targets: {v['only_adaptive']} flipped only "
            f"by this attack, {v['only_static']} only by the static one, exact McNemar p = {v['p']:.2g}")


def load_bench(name: str, root: str | Path | None = None) -> dict | None:
    """A shipped benchmark result (``bench/results/<name>.json``), or None when it is not there."""
    path = Path(root or BENCH_RESULTS) / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def copies_needed(rows: list[dict]) -> str:
    """What the shipped exact-copy runs measured, per victim: the fewest copies that flipped any target
    and the fewest that flipped every one (read from the rows, so the words follow the data)."""
    parts = []
    for victim in dict.fromkeys(r["victim"] for r in rows):
        rs = sorted((r for r in rows if r["victim"] == victim), key=lambda r: r["count"])
        some = next((r["count"] for r in rs if r["rate"] > 0), None)
        every = next((r["count"] for r in rs if r["rate"] == 1), None)
        name = victim_name(victim, " head")
        if some is None:
            parts.append(f"{name}: none flipped with up to {rs[-1]['count']} copies")
        elif some == every:
            parts.append(f"{name}: every target flipped at {some} {'copy' if some == 1 else 'copies'}")
        else:
            parts.append(f"{name}: the first target at {some}, " + (f"all at {every}" if every else "not all"))
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."
