"""Reporting on experiments: cell summaries, Markdown tables, figures, reading shipped results.

Kept apart from the runner (``core.experiments``) so that the dashboard and the write-ups read
results without importing anything that runs trials.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .attacks import budget_levels
from .checkpoints import CHECKPOINT_DIR
from .stats import wilson_interval


def fmt_rate(rate: float, ci: tuple[float, float] | list[float]) -> str:
    """"47% (30-64%)": a rate with its 95% interval, as people read it."""
    return f"{100 * rate:.0f}% ({100 * ci[0]:.0f}-{100 * ci[1]:.0f}%)"


def summarise(records: list[dict]) -> list[dict]:
    """Per (model, attack, k, setting, defence): success rate with its Wilson 95% interval, how
    clean-label the poisons were, and detection metrics for filters.

    ``clean_label_rate``: share of the cell's poisons both judges call the base class;
    ``clean_label_success``: trials that succeeded with every poison clean-label (and its rate).
    """
    cells: dict = {}
    for r in records:
        if "skipped" in r:
            continue
        for defence, d in r["defences"].items():
            cells.setdefault((r["model"], r["attack"], r["n_poisons"], r["setting"], defence), []).append((r, d))
    rows = []
    for (model, attack, k, setting, defence), items in sorted(cells.items()):
        n = len(items)
        wins = sum(d["success"] for _, d in items)
        clean_wins = sum(d["success"] and r.get("clean_label", False) for r, d in items)
        judged = [r["judge"]["clean_label"] for r, _ in items if r.get("judge")]
        row = {"model": model, "attack": attack, "n_poisons": k, "setting": setting, "defence": defence,
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


def readable(rows: list[dict]) -> list[dict]:
    """Cells with names a person reads (the dashboard's tables): attack and filter names, not codes,
    and rates as "47% (30-64%)"."""
    from .attacks import ATTACKS
    from .defences import label

    out = []
    for r in rows:
        row = {"victim": model_name(r["model"]), "filter": label(r["defence"]), "attack": ATTACKS[r["attack"]].label,
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
        lines.append(f"| {r['model']} | {r['attack']} | {r['n_poisons']} | {eps} | {r['setting']} | {r['defence']} | "
                     f"{fmt_rate(r['rate'], r['ci95'])} | {clean} | {r['clean_label_success']} | {r['trials']} | "
                     f"{100 * r['clean_acc_after']:.1f}% | {det} | {r['mean_l2']:.2f} | "
                     f"{r['mean_feature_distance']:.2f} |")
    return head + "\n".join(lines) + "\n"


def load_results(root: str | Path | None = None) -> dict[str, dict]:
    """Every finished experiment under ``root`` (default: the shipped ``checkpoints/experiments``),
    by folder name: what ``run_experiment`` wrote to ``results.json``."""
    root = Path(root) if root is not None else CHECKPOINT_DIR / "experiments"
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/results.json"))}


def experiment_models(res: dict) -> list[dict] | None:
    """The model configs of a finished experiment (from ``load_results``), read from their side files;
    None when a checkpoint is gone or fails its check (the experiment cannot be placed then)."""
    from .checkpoints import CheckpointError, read_meta

    try:
        return [read_meta(p)["config"] for p in res["config"]["models"].values()]
    except (OSError, KeyError, CheckpointError):
        return None


SHARE_TICKS = [0, 0.25, 0.5, 0.75, 1]  # the bar charts leave room right of 100% for their labels: no tick there


MODEL_NAMES = {"lgm": "LGM", "softmax": "Softmax"}


def model_name(name: str) -> str:
    """An experiment's model key as readers name it: "LGM", "Softmax" (other keys unchanged)."""
    return MODEL_NAMES.get(name, name)


def victim_name(victim: str, suffix: str = "") -> str:
    """A benchmark's victim as readers name it: "softmax, weight decay 0.01" -> "Softmax{suffix}, weight
    decay 0.01"; ``suffix`` (" head") only after a known model key."""
    head, _, rest = str(victim).partition(",")
    return model_name(head) + (suffix if head in MODEL_NAMES else "") + (f",{rest}" if rest else "")


def rate_figure(rows: list[dict], title: str = ""):
    """Success rate with 95% intervals, one series per model / defence / setting (/ attack when
    several): lines against the number of poisons, or bars when every row has the same number (a
    dozen series stacked on one x position would hide each other). The dashboard shows it too."""
    import plotly.graph_objects as go

    from .attacks import ATTACKS
    from .defences import label

    attacks, settings = len({r["attack"] for r in rows}) > 1, len({r["setting"] for r in rows}) > 1
    series: dict = {}
    # each model's undefended victim first, then the same victim behind each filter
    for r in sorted(rows, key=lambda r: (r["model"], r["defence"] != "none", r["defence"])):
        name = model_name(r["model"]) + (f" + {label(r['defence'])}" if r["defence"] != "none" else ", no filter")
        name = (f"{ATTACKS[r['attack']].label}: " if attacks else "") + name + (f", {r['setting']}" if settings else "")
        series.setdefault(name, []).append(r)
    fig = go.Figure()
    if len({r["n_poisons"] for r in rows}) == 1:
        # horizontal bars: long victim names stay readable, and "0 of 100" is printed, never an empty chart;
        # the count sits right of the interval's whisker, which would otherwise strike through it
        names, rs = list(series)[::-1], [v[0] for v in series.values()][::-1]
        fig.add_trace(go.Bar(y=names, x=[r["rate"] for r in rs], error_x=_error_bars(rs), orientation="h",
                             showlegend=False,
                             marker_color=["#d62728" if r["defence"] == "none" else "#1f77b4" for r in rs]))
        fig.add_trace(go.Scatter(y=names, x=[r["ci95"][1] + 0.03 for r in rs], mode="text", showlegend=False,
                                 text=[f"{r['successes']} of {r['trials']}" if "trials" in r else f"{100 * r['rate']:.0f}%"
                                       for r in rs], textposition="middle right", cliponaxis=False, hoverinfo="skip"))
        fig.update_layout(yaxis_title=None, xaxis_title=f"targets flipped, {rows[0]['n_poisons']} poisons per trial "
                                                        "(whisker: 95% interval)",
                          xaxis_range=[0, 1.25], xaxis_tickvals=SHARE_TICKS, xaxis_tickformat=".0%",
                          height=max(260, 34 * len(rs) + 120), margin={"l": 10, "r": 60})
    else:
        for name, rs in series.items():
            rs = sorted(rs, key=lambda r: r["n_poisons"])
            fig.add_trace(go.Scatter(x=[r["n_poisons"] for r in rs], y=[r["rate"] for r in rs], name=name,
                                     mode="lines+markers", error_y=_error_bars(rs)))
        fig.update_layout(xaxis_title="number of poisons", yaxis_title="share of targets flipped",
                          yaxis_range=[0, 1.1], height=420)
    fig.update_layout(title=title)
    return fig


def detection_figure(rows: list[dict], title: str = ""):
    """Share of poisons each filter caught at the experiment's false-positive rate, per model: the
    filters' side of the story, which a chart of (rare) successes cannot show."""
    import plotly.graph_objects as go

    from .defences import label

    rs = sorted((r for r in rows if r["defence"] != "none" and r.get("poisons_flagged") is not None),
                key=lambda r: (r["model"], -r["poisons_flagged"]))[::-1]
    fig = go.Figure(go.Bar(y=[f"{model_name(r['model'])} + {label(r['defence'])}" for r in rs],
                           x=[r["poisons_flagged"] for r in rs],
                           orientation="h", text=[f"{100 * r['poisons_flagged']:.0f}% (AUC {r['auc']:.2f})" for r in rs],
                           textposition="outside", cliponaxis=False,
                           marker_color=["#1f77b4" if r["defence"] == "lgm" else "#7f7f7f" for r in rs]))
    fig.update_layout(title=title, xaxis_title="share of poisons caught", xaxis_range=[0, 1.3],
                      xaxis_tickvals=SHARE_TICKS, xaxis_tickformat=".0%",
                      height=max(260, 34 * len(rs) + 120), margin={"l": 10, "r": 110})
    return fig


BENCH_RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def load_bench(name: str, root: str | Path | None = None) -> dict | None:
    """A shipped benchmark result (``bench/results/<name>.json``), or None when it is not there."""
    path = Path(root or BENCH_RESULTS) / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def curve_figure(rows: list[dict], x: str, series: str, title: str, x_title: str, log_x: bool = False,
                 names: dict | None = None):
    """Success rate with 95% intervals against ``x`` (poison count, budget), one line per ``series``
    value (a victim, a model): the dose-response and budget curves of the benchmarks."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for value in dict.fromkeys(r[series] for r in rows):
        rs = sorted((r for r in rows if r[series] == value), key=lambda r: r[x])
        name = (names or {}).get(value, victim_name(value))
        fig.add_trace(go.Scatter(x=[r[x] for r in rs], y=[r["rate"] for r in rs], mode="lines+markers", name=name,
                                 error_y=_error_bars(rs), line={"color": _victim_colour(name)}))
    ticks = sorted({r[x] for r in rows})
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title="share of targets flipped", height=400,
                      yaxis_range=[-0.05, 1.1], xaxis_type="log" if log_x else "linear",
                      xaxis={"tickvals": ticks if len(ticks) <= 12 else None},
                      legend={"orientation": "h", "y": -0.25})
    return fig


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


def _victim_colour(name: str) -> str | None:
    """The dashboard's colour code for victims: softmax red, regularised softmax orange, LGM blue."""
    low = name.lower()
    if "softmax" in low:
        return "#ff7f0e" if "decay" in low or "regular" in low else "#d62728"
    return "#1f77b4" if "lgm" in low else None


def _error_bars(rows: list[dict]) -> dict:
    return {"type": "data", "symmetric": False, "array": [r["ci95"][1] - r["rate"] for r in rows],
            "arrayminus": [r["rate"] - r["ci95"][0] for r in rows]}


def write_plot(rows: list[dict], path: Path) -> None:
    """The success-rate chart as HTML that loads plotly.js from its CDN (10 KB, not 4.8 MB per
    experiment folder); offline, the dashboard's Attack outcomes page draws the same chart."""
    rate_figure(rows, "attack success rate (95% Wilson intervals)").write_html(path, include_plotlyjs="cdn")
