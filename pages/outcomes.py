"""Attack outcomes: measured success rates, softmax vs LGM vs LGM + filter vs the baselines."""

import tempfile
from pathlib import Path

import streamlit as st

from core.attacks import ATTACKS, budget_levels, default_eps
from core.experiments import ExperimentConfig, run_experiment
from core.report import load_bench, primary_cells, readable, reproduce_command
from pages.common import DATASET_NAMES, experiments_for, sidebar, space_first
from pages.figures import budget_figure, curve_figure, detection_figure, frozen, rate_figure
from pages.jobs_ui import heavy_job

@st.cache_resource(show_spinner=False)
def experiment_figures(dataset: str, name: str) -> list:
    """[(attack, setting, rates figure, caught figure)] of a shipped experiment, built once per server
    (a class opening this page at once waited for thirty builds of the same charts)."""
    res = experiments_for(dataset)[name]
    cells, fpr = primary_cells(res), res["config"]["fpr"]
    out = []
    for attack in sorted({c["attack"] for c in cells}):
        for setting in sorted({c["setting"] for c in cells}):
            sub = [c for c in cells if c["attack"] == attack and c["setting"] == setting]
            if sub:
                out.append((attack, setting,
                            frozen(rate_figure(sub, f"{ATTACKS[attack].label}, {setting} victim: targets flipped")),
                            frozen(detection_figure(sub, f"Poisons caught, at {100 * fpr:.0f}% of clean images thrown away"))))
    return out


@st.cache_resource(show_spinner=False)
def bench_results(dataset: str) -> tuple:
    """The data set's shipped budget and dose benchmarks (read once per server)."""
    stem = dataset.replace("-", "_")
    return load_bench(f"budget_{stem}"), load_bench(f"dose_{stem}")


@st.cache_resource(show_spinner=False)
def bench_figures(dataset: str) -> tuple:
    """(budget figure, dose figure) of the shipped benchmarks, None where there is none; built once."""
    budget, dose = bench_results(dataset)
    fig_budget = fig_dose = None
    if budget:
        rows = budget["rows"]
        fig_budget = frozen(budget_figure(rows, f"Targets flipped against the budget ({rows[0]['pairs']} pairs per point)",
                                          "most grey levels any pixel may change (of 255)"))
    if dose:
        rows = [r for r in dose["rows"] if r["kind"] == "copies"]
        fig_dose = frozen(curve_figure(rows, "count", "victim", f"Exact copies of the target's feature needed "
                                       f"({rows[0]['pairs']} targets)", "copies added (log scale)", log_x=True))
    return fig_budget, fig_dose


dataset, space, pair = sidebar()
st.title("Attack outcomes")
st.markdown("How often does an attack make the retrained victim misclassify its target? Each number is a share "
            "of independent trials (random target and base class), with a 95% confidence interval: the range "
            "the true rate lies in, given how few trials there were.")


def describe(res: dict) -> str:
    """One line that says what an experiment varied, read from its own config."""
    cfg = res["config"]
    per_cell = max((c["trials"] for c in primary_cells(res)), default=0)
    return (f"{', '.join(Path(p).stem for p in cfg['models'].values())}; attacks {', '.join(cfg['attacks'])}; "
            f"poisons {', '.join(map(str, cfg['n_poisons']))}; {', '.join(cfg['settings'])}; "
            f"{per_cell} trials per cell" + ("; UNCONSTRAINED, not clean-label" if above_budget(cfg, dataset) else ""))


def above_budget(cfg: dict, dataset: str) -> bool:
    """An experiment run with a pixel budget larger than the data set's clean-label one (a sanity run)."""
    return cfg.get("eps") is not None and cfg["eps"] > default_eps(dataset)



results = experiments_for(dataset)
if not results:
    st.info(f"No shipped experiment results for {DATASET_NAMES[dataset]} yet: choose another data set in the sidebar, "
            "or run one below.")
else:
    names = space_first(list(results), dataset, space)
    name = st.selectbox("Shipped experiment", names, index=0,
                        key="experiment", format_func=lambda n: f"{n}: {describe(results[n])}")
    res = results[name]
    cfg = res["config"]
    if above_budget(cfg, dataset):
        st.warning(f"Unconstrained (not clean-label): each pixel could change by up to "
                   f"{budget_levels(cfg['eps'])} of 255 grey levels (the clean-label budget is "
                   f"{budget_levels(default_eps(dataset))}), so these poisons show their target. A sanity run: "
                   "what the attack does when looks do not matter.")
    ran = sum(c["trials"] for c in primary_cells(res) if c["defence"] == "none") or res["n_trials"]  # not the skipped ones
    st.caption(f"{ran} trials; {cfg['iters']} crafting iterations; {cfg['n_clean']} clean retraining "
               f"images; filters at {100 * cfg['fpr']:.0f}% false positives on clean data. Reproduce with "
               f"`{reproduce_command(name, res)}`.")
    if res.get("labelled"):
        st.info(f"A labelled data set: the poisons of `{res['labelled']['from']}`, with those its judge "
                f"(`{res['labelled']['judge']}`) would not call their base class dropped, as a person checking "
                f"the labels would ({100 * res['labelled']['poisons_kept']:.0f}% kept), and every victim retrained "
                "on what is left. Its successes are clean-label successes.")
    for attack, setting, rates, caught in experiment_figures(dataset, name):
        left, right = st.columns(2)
        left.plotly_chart(rates, width="stretch", key=f"{name}_{attack}_{setting}")
        right.plotly_chart(caught, width="stretch", key=f"{name}_{attack}_{setting}_det")
    st.dataframe(readable(primary_cells(res)), hide_index=True, width="stretch")

budget, dose = bench_results(dataset)
if budget or dose:
    st.subheader("How big a budget, how many poisons")
    c1, c2 = st.columns(2)
    if budget:
        rows = budget["rows"]
        c1.plotly_chart(bench_figures(dataset)[0], width="stretch", key="budget_curve")
        soft = sorted((r for r in rows if "softmax" in r["model"]), key=lambda r: r["eps"])
        lost = next((budget_levels(r["eps"]) for r in soft if r["clean_label_rate"] < 0.5), None)
        c1.caption("Poisons still clean-label (Softmax): " + ", ".join(
            f"{100 * r['clean_label_rate']:.0f}% at {budget_levels(r['eps'])}" for r in soft)
            + (f". From {lost}/255 fewer than half are judged clean-label." if lost is not None else "."))
    if dose:
        c2.plotly_chart(bench_figures(dataset)[1], width="stretch", key="dose_curve")
        c2.caption("A sanity test of the victims' heads, not an attack: how many training points sitting exactly "
                   "on the target, labelled as the base class, flip each one (bench/bench_dose.py).")

st.subheader("Run a small experiment now")
st.caption("A few trials on the embedded sample with the selected models: numbers are rough, the point is to see "
           "how they are made. The full runs are `poisonlab experiment --config FILE --out DIR`.")
c1, c2, c3 = st.columns(3)
trials = c1.slider("Trials", 1, 5, 2)
n_poisons = c2.slider("Poisons", 1, 10, 5)
attack = c3.selectbox("Attack", list(ATTACKS), format_func=lambda a: ATTACKS[a].label)
work = None
if st.button("Run"):
    cfg = ExperimentConfig(models=dict(pair), attacks=(attack,), n_poisons=(n_poisons,), trials=trials, iters=100,
                           n_clean=300, n_test=300, demo=True, defences=("none", "lgm", "centroid", "knn"))

    def experiment_job(job, cfg=cfg):
        with tempfile.TemporaryDirectory() as tmp:
            summary = run_experiment(cfg, tmp, progress=False,
                                     on_trial=lambda done, total: job.report(done / total, f"trial {done}/{total}"))
        return {"cells": summary["cells"], "attack": cfg.attacks[0], "dataset": dataset}
    work = experiment_job
finished = heavy_job("Live experiment", work is not None, work)
if finished is not None:
    st.session_state["live_experiment"] = finished
live = st.session_state.get("live_experiment")
if live and live["dataset"] == dataset:
    st.plotly_chart(rate_figure(live["cells"], f"live: {ATTACKS[live['attack']].label}, transfer"), width="stretch")
    st.dataframe(readable(live["cells"]), hide_index=True, width="stretch")
