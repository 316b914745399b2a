"""Defences: every filter scored on the same poisons, ROC curves and score histograms."""

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.attacks import ATTACKS
from core.defences import label as defence_label
from core.lab import defence_comparison
from core.report import fullest_ladder, head_label, ladder_sentence, model_name, primary_cells
from pages.common import DATASET_NAMES, HEADS, demo, experiments_for, judge, ladders_for, model, sidebar, targets
from pages.figures import detection_figure, ladder_figure
from pages.jobs_ui import heavy_job

dataset, space, pair = sidebar()
ds = demo(dataset)
st.title("Defences")
st.markdown("A filter gives every training image a *suspicion score*. The ROC curve shows, for every threshold, "
            "the share of poisons caught (up) against the share of clean images wrongly thrown away (right): "
            "the closer to the top-left corner, the better; AUC 1.0 is perfect, 0.5 is guessing.")
with st.form("defences_form"):  # nothing is crafted until the button: moving a slider costs nothing
    c1, c2, c3 = st.columns(3)
    attack = c1.selectbox("Poisons from", list(ATTACKS), format_func=lambda a: ATTACKS[a].label,
                          help="The defence-aware attack knows the LGM filter and tries to stay likely under the base "
                               "class. Every attack stays within the data set's clean-label pixel budget.")
    n_pairs = c2.slider("Target/base pairs", 1, 8, 3)
    iters = c3.slider("Crafting steps", 20, 500, 100, step=20)
    submitted = st.form_submit_button("Craft and compare", type="primary")


@st.cache_resource(show_spinner=False)
def comparisons() -> dict:
    """Finished comparisons, shared by every browser: {(dataset, space, attack, pairs, steps): {head: result}}."""
    return {}


key = (dataset, space, attack, n_pairs, iters)  # what a comparison is made for
work = None
if submitted and key not in comparisons():
    inputs = ({head: model(pair[head])[0] for head in HEADS}, demo(dataset), targets(dataset, space), judge(dataset))

    def compare_job(job, key=key, inputs=inputs):
        models, d, candidates, the_judge = inputs
        return {"key": key, "results": defence_comparison(models, d, attack, candidates, n_pairs=n_pairs, iters=iters,
                                                          judge=the_judge, progress=job.report)}
    work = compare_job
finished = heavy_job("Defences", work is not None, work)
if finished is not None:
    store = comparisons()
    if len(store) >= 64:  # bounded: the oldest comparison goes first
        store.pop(next(iter(store)))
    store[finished["key"]] = finished["results"]
if submitted:
    st.session_state["def_shown"] = key
if st.session_state.get("def_shown") == key and key in comparisons():
    cols = st.columns(2)
    for col, head in zip(cols, ("softmax", "lgm")):
        why = ATTACKS[attack].why_not(head)
        if why:
            col.info(why)
            continue
        res = comparisons()[key][head]
        roc_fig = go.Figure()
        rows = []
        for name, r in res["defences"].items():
            roc_fig.add_trace(go.Scatter(x=r["fpr"], y=r["tpr"], mode="lines", name=f"{defence_label(name)} ({r['auc']:.2f})"))
            rows.append({"defence": defence_label(name), "AUC": round(r["auc"], 3),
                         "caught at 1% FPR": f"{100 * r['tpr_at_fpr_1']:.0f}%",
                         "caught at 5% FPR": f"{100 * r['tpr_at_fpr_5']:.0f}%"})
        roc_fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"},
                                     showlegend=False))
        roc_fig.update_layout(title=f"{head_label(head)} model", xaxis_title="clean images thrown away",
                              yaxis_title="poisons caught", height=420)
        with col:
            st.plotly_chart(roc_fig, width="stretch", key=f"roc_{head}")
            st.dataframe(rows, hide_index=True, width="stretch")
            for c in res["defences"].get("lgm", {}).get("chi2", []):
                st.caption(f"Chi-square threshold at a nominal {100 * c['nominal_fpr']:.0f}% (set from the model "
                           f"alone, no clean data): throws away {100 * c['clean_flagged']:.1f}% of clean images, "
                           f"catches {100 * c['poisons_flagged']:.0f}% of poisons.")
            which = st.selectbox("Score histogram of", list(res["defences"]), format_func=defence_label, key=f"h_{head}")
            s = np.asarray(res["defences"][which]["scores"])
            hist = go.Figure([go.Histogram(x=s[~res["is_poison"]], name="clean", opacity=0.6, histnorm="probability"),
                              go.Histogram(x=s[res["is_poison"]], name="poisons", opacity=0.8, histnorm="probability")])
            hist.update_layout(barmode="overlay", height=320, xaxis_title="suspicion score")
            st.plotly_chart(hist, width="stretch", key=f"hist_{head}")
elif st.session_state.get("def_shown") != key:
    measured = experiments_for(dataset)
    st.info("Press **Craft and compare** to score poisons crafted now: a few seconds per pair on a laptop."
            + (" Until then, what the filters caught in a shipped experiment:" if measured else ""))

    def fits(n: str) -> tuple:  # the chosen attack first, then the sidebar's feature space, then `default`,
        # then the most trials of that attack (the best evidence), then the name
        trials = max((c["trials"] for c in measured[n].get("cells", []) if c["attack"] == attack), default=0)
        return attack not in measured[n]["config"]["attacks"], measured[n]["space"] != space, n != "default", \
            -trials, n
    name = min(measured, key=fits, default=None)
    if name is None:
        st.caption(f"No shipped experiment for {DATASET_NAMES[dataset]} yet.")
    else:
        res = measured[name]
        shown = attack if attack in res["config"]["attacks"] else res["config"]["attacks"][0]
        cells = [r for r in primary_cells(res) if r["attack"] == shown]
        k, setting = min(r["n_poisons"] for r in cells), cells[0]["setting"]
        rows = [r for r in cells if (r["n_poisons"], r["setting"]) == (k, setting)]
        st.plotly_chart(detection_figure(rows, f"{ATTACKS[shown].label}: poisons caught at "
                                               f"{100 * res['config']['fpr']:.0f}% of clean images thrown away"),
                        width="stretch", key="def_shipped")
        st.caption(f"Shipped experiment `{name}`: {max(r['trials'] for r in rows)} trials of "
                   f"{rows[0]['n_poisons']} poisons per model, each trial's poisons scored among "
                   f"{res['config']['n_clean']} clean training images. Attack outcomes has the rest.")

st.subheader("Against an attacker who knows the filter")
ladders = ladders_for(dataset)
if not ladders:
    st.caption(f"No adaptive ladder is shipped for {DATASET_NAMES[dataset]} yet (`poisonlab ladder`).")
else:
    names = list(ladders)
    most = fullest_ladder(ladders)  # several ladders (e.g. two poison counts): the best evidence first
    name = names[0] if len(names) == 1 else st.selectbox(
        "Shipped ladder", names, index=names.index(most), key="ladder_pick",
        format_func=lambda n: f"{n}: {ladders[n]['rows'][0]['n_poisons']} poisons" if ladders[n]["rows"] else n)
    ladder = ladders[name]
    st.markdown(f"Each filter against **{ATTACKS[ladder['attack']].label}** with a stealth term that mirrors the "
                "filter's own score, weighted by w (w = 0: the plain attack, hollow). A point high and to the "
                "left means poisons that stay unflagged and still flip the target. A star: an attack aimed at "
                "*another* filter that did better against this one than the filter's own curve.")
    for m in sorted({r["model"] for r in ladder["rows"]}):
        st.plotly_chart(ladder_figure(ladder, m, f"{model_name(m)} model"), width="stretch",
                        key=f"ladder_{name}_{m}")
        for defence in dict.fromkeys(r["filter"] for r in ladder["rows"] if r["model"] == m):
            sentence = ladder_sentence(ladder, m, defence)
            if sentence:
                st.caption(sentence)
    models = ", ".join(Path(p).name for p in ladder["config"]["models"].values())
    st.caption(f"Shipped ladder `{name}` (models: {models}): {max(r['trials'] for r in ladder['rows'])} trials "
               "per point at most, "
               f"{ladder['rows'][0]['n_poisons']} poisons each; intervals are Wilson 95% (the flagged "
               "share's over poisons, which are not independent within a trial: read it as optimistic).")

