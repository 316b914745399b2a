"""The dashboard's charts of measured results: success rates, what the filters caught, dose and budget
curves. Built from the rows ``core.report`` reads and summarises (core draws nothing); the feature-space
scatter is in ``pages/plots.py``.

The colours are defined here, once: the class palette every scatter uses, and the victims' colour code
(softmax red, regularised softmax orange, LGM blue; the LGM filter blue, other filters grey).
"""

from __future__ import annotations

import plotly.graph_objects as go

from core.attacks import ATTACKS, budget_levels
from core.defences import DEFENCES, label
from core.report import head_label, model_name, rival_aimed_at, stronger_rival, victim_name

# Plotly's default palette (D3's category10): class c is drawn in COLOURS[c]
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
BLUE, ORANGE, RED, GREY = COLOURS[0], COLOURS[1], COLOURS[3], COLOURS[7]
SOFTMAX_COLOUR, REGULARISED_COLOUR, LGM_COLOUR = RED, ORANGE, BLUE

# one colour per filter on every chart (the LGM filter in the LGM blue; none in the victims' red or orange)
FILTER_COLOURS = {"lgm": LGM_COLOUR, **dict(zip((d for d in DEFENCES if d != "lgm"), (COLOURS[i] for i in (2, 4, 5, 6, 8, 9))))}

SHARE_TICKS = [0, 0.25, 0.5, 0.75, 1]  # the bar charts leave room right of 100% for their labels: no tick there


class FrozenFigure(go.Figure):
    """A figure built once per server and never changed after: its plotly dict is made on its first
    draw and reused. ``st.plotly_chart`` asks every figure for that dict on every run, and for the
    figures the pages cache that conversion was most of a page's own time under a class of thirty."""

    def to_dict(self) -> dict:
        done = self.__dict__.get("_frozen_dict")
        if done is None:
            done = self.__dict__["_frozen_dict"] = super().to_dict()
        return done


def frozen(fig: go.Figure) -> FrozenFigure:
    """``fig`` as a ``FrozenFigure``, for a figure a page caches (``st.cache_resource``): change it
    only before this call."""
    return FrozenFigure(fig)


def rate_figure(rows: list[dict], title: str = ""):
    """Success rate with 95% intervals, one series per model / defence / setting (/ attack when
    several): lines against the number of poisons, or bars when every row has the same number (a
    dozen series stacked on one x position would hide each other). The dashboard shows it too."""
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
                             marker_color=[SOFTMAX_COLOUR if r["defence"] == "none" else LGM_COLOUR for r in rs]))
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
    rs = sorted((r for r in rows if r["defence"] != "none" and r.get("poisons_flagged") is not None),
                key=lambda r: (r["model"], -r["poisons_flagged"]))[::-1]
    fig = go.Figure(go.Bar(y=[f"{model_name(r['model'])} + {label(r['defence'])}" for r in rs],
                           x=[r["poisons_flagged"] for r in rs],
                           orientation="h", text=[f"{100 * r['poisons_flagged']:.0f}% (AUC {r['auc']:.2f})" for r in rs],
                           textposition="outside", cliponaxis=False,
                           marker_color=[LGM_COLOUR if r["defence"] == "lgm" else GREY for r in rs]))
    fig.update_layout(title=title, xaxis_title="share of poisons caught", xaxis_range=[0, 1.3],
                      xaxis_tickvals=SHARE_TICKS, xaxis_tickformat=".0%",
                      height=max(260, 34 * len(rs) + 120), margin={"l": 10, "r": 110})
    return fig


def curve_figure(rows: list[dict], x: str, series: str, title: str, x_title: str, log_x: bool = False,
                 names: dict | None = None):
    """Success rate with 95% intervals against ``x`` (poison count, budget), one line per ``series``
    value (a victim, a model): the dose-response and budget curves of the benchmarks."""
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


def budget_figure(rows: list[dict], title: str, x_title: str):
    """A budget benchmark's rows (``bench/results/budget_*.json``) as ``curve_figure`` draws them: targets
    flipped against the budget in grey levels, one line per victim ("Softmax victim", "LGM victim")."""
    names = {r["model"]: f"{head_label('softmax' if 'softmax' in r['model'] else 'lgm')} victim" for r in rows}
    return curve_figure([{**r, "x": budget_levels(r["eps"])} for r in rows], "x", "model", title, x_title,
                        names=names)


def _victim_colour(name: str) -> str | None:
    """The dashboard's colour code for victims: softmax red, regularised softmax orange, LGM blue."""
    low = name.lower()
    if "softmax" in low:
        return REGULARISED_COLOUR if "decay" in low or "regular" in low else SOFTMAX_COLOUR
    return LGM_COLOUR if "lgm" in low else None


def _error_bars(rows: list[dict]) -> dict:
    return {"type": "data", "symmetric": False, "array": [r["ci95"][1] - r["rate"] for r in rows],
            "arrayminus": [r["rate"] - r["ci95"][0] for r in rows]}


def _weight_labels(rows: list[dict]) -> list[str]:
    """One label per point, "w=..." for w > 0 (the static point is the hollow one); points that
    coincide share one label ("w=0.01, 0.1, 1") instead of printing over each other."""
    first: dict = {}
    for i, r in enumerate(rows):
        if r["weight"]:
            first.setdefault((r["flagged"]["share"], r["success_filtered"]["rate"]), []).append(i)
    out = [""] * len(rows)
    for idx in first.values():
        out[idx[0]] = "w=" + ", ".join(f"{rows[i]['weight']:g}" for i in idx)
    return out


def ladder_figure(ladder: dict, model: str, title: str = "", filters: tuple[str, ...] | None = None):
    """The adaptive ladder of one model (``core.ladder``): per filter, the share of poisons it flags
    (x) against targets flipped behind it (y), one point per stealth weight w, the static attack
    (w = 0) hollow. An attacker who knows the filter wins where a curve reaches the top left:
    poisons unflagged and effective. The dotted line is the unfiltered victim at w = 0. A star in a
    filter's colour: an attack aimed at another filter that did better against it
    (``core.report.stronger_rival``). ``filters``: draw only these (the tour shows the LGM filter alone)."""
    rs = [r for r in ladder["rows"] if r["model"] == model and (filters is None or r["filter"] in filters)]
    fig = go.Figure()
    for defence in dict.fromkeys(r["filter"] for r in rs):
        mine = sorted((r for r in rs if r["filter"] == defence), key=lambda r: r["weight"])
        colour = FILTER_COLOURS.get(defence, GREY)
        ys = [r["success_filtered"] for r in mine]
        fig.add_trace(go.Scatter(
            x=[r["flagged"]["share"] for r in mine], y=[y["rate"] for y in ys], mode="lines+markers+text",
            # the static points are the hollow ones (several filters' can coincide): only w > 0 is labelled
            name=label(defence), text=_weight_labels(mine),
            customdata=[f"w={r['weight']:g}" for r in mine], textposition="top right",
            marker={"color": colour, "size": 10, "symbol": ["circle-open" if r["weight"] == 0 else "circle" for r in mine]},
            line={"color": colour},
            error_y={"type": "data", "symmetric": False, "array": [y["ci95"][1] - y["rate"] for y in ys],
                     "arrayminus": [y["rate"] - y["ci95"][0] for y in ys]},
            hovertemplate="%{customdata}: %{x:.0%} of poisons flagged, %{y:.0%} of targets flipped<extra>" + label(defence)
            + "</extra>"))
        rival = stronger_rival(ladder, model, defence)
        if rival:
            aimed_at = rival_aimed_at(rival)
            fig.add_trace(go.Scatter(
                x=[rival["flagged"]["share"]], y=[rival["success_filtered"]["rate"]], mode="markers",
                name=f"{label(defence)}, attack aimed at {aimed_at}",
                marker={"color": colour, "size": 16, "symbol": "star", "line": {"color": "black", "width": 1}},
                hovertemplate=f"aimed at {aimed_at}, w={rival['weight']:g}: " + "%{x:.0%} of poisons flagged, "
                "%{y:.0%} of targets flipped<extra>" + label(defence) + "</extra>"))
    static = [r for r in rs if r["weight"] == 0]
    if static:
        fig.add_hline(y=static[0]["success_unfiltered"]["rate"], line_dash="dot", line_color=GREY,
                      annotation_text="no filter, static attack", annotation_position="top left")
    fig.update_layout(title=title, xaxis_title="share of poisons the filter flags",
                      yaxis_title="share of targets flipped behind it", xaxis_range=[-0.05, 1.1],
                      yaxis_range=[-0.05, 1.1], xaxis_tickformat=".0%", yaxis_tickformat=".0%", height=440,
                      legend={"orientation": "h", "y": -0.2})
    return fig
