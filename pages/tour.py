"""Guided tour: seven one-click steps through one shipped trial, for a class, and an eighth from the shipped
adaptive ladder where the data set has one. Nothing is computed live."""

import plotly.graph_objects as go
import streamlit as st

from core.attacks import ATTACKS, budget_levels
from core.data import CLASSES
from core.gallery import SHOWCASE_RULE
from core.judge import JUDGES
from core.report import (copies_needed, fullest_ladder, ladder_sentence, load_bench, load_results, primary_cells,
                         significant_gain)
from pages.common import DATASET_NAMES, article, ladders_for, named, sidebar
from pages.figures import BLUE, budget_figure, curve_figure, ladder_figure
from pages.plots import amplified, image_for_display, show_image, space_figure
from pages.showcase import control_rows, no_showcase, pick_showcase, recipe

dataset, space, pair = sidebar()
st.title("Guided tour")

picked = pick_showcase(dataset, space)
if picked is None:  # no example in the sidebar's models: offer the ones that have one, never draw others
    elsewhere = [(d, s) for d in (dataset, "mnist") for s in ("high-d", "2-D") if pick_showcase(d, s) is not None]
    if not elsewhere:
        st.error("The tour needs a shipped experiment with a clean-label poisoning (e.g. checkpoints/experiments/"
                 "default with its gallery).")
        st.stop()
    d, s = elsewhere[0]
    st.info(f"{no_showcase(dataset, space)}. The tour walks through one that worked, on "
            f"{DATASET_NAMES[d]} with {s} models.")

    def _switch(d: str = d, s: str = s) -> None:
        st.session_state["dataset"], st.session_state["space"] = d, s

    st.button(f"Switch the sidebar to {DATASET_NAMES[d]}, {s} and start the tour", on_click=_switch, type="primary")
    st.stop()
name, g, sc = picked
t_soft = g.trials[sc.softmax]
t_lgm = g.trials[sc.lgm] if sc.lgm is not None else None
classes = g.classes
T, B = classes[t_soft["target_label"]], classes[t_soft["base_class"]]
target, bases, poisons = g.images(sc.softmax)
levels = budget_levels(t_soft["eps"])
fpr = g.config["fpr"]
victim = recipe(g.config.get("victim") or {"head": "warm"})
cell_rate = next((c for c in primary_cells(load_results().get(name, {}))
                  if (c["model"], c["attack"], c["defence"], c["setting"]) == ("lgm", "fc", "lgm", "transfer")), None)


def predict(key: str, question: str, options: tuple[str, ...], answer: str) -> bool:
    """Predict, then reveal: the class answers ``question`` first; True once they pressed Reveal (the
    step then shows the shipped result, and whether the prediction was right). Keyed by the trial
    shown, so another data set's tour asks again."""
    key = f"{name}:{sc.softmax}:{key}"
    revealed = st.session_state.setdefault("tour_revealed", {})
    if key in revealed:
        guess = revealed[key]
        if guess is not None:
            (st.success if guess == answer else st.warning)(f"You predicted: {guess}. What happened: {answer}.")
        return True
    st.markdown(f"**Predict first.** {question}")
    st.radio("Your prediction", options, index=None, key=f"_predict_{key}", horizontal=True,
             label_visibility="collapsed")

    def _reveal() -> None:  # the guess is kept where no widget owns it (a widget's value goes with it)
        st.session_state["tour_revealed"][key] = st.session_state.get(f"_predict_{key}")

    st.button("Reveal the result", on_click=_reveal, key=f"reveal_{key}", type="primary")
    return False


def _scatter(model_name: str, trial: int | None, title: str) -> go.Figure:
    return space_figure(g.models[model_name]["path"], title,
                        poisons=g.features(trial, model_name) if trial is not None else None, class_ids=g.class_ids)


def _by_head(head: str) -> str:
    return next(n for n, m in g.models.items() if m["head"] == head)


def step_networks() -> None:
    if g.class_ids is not None:  # models pretrained on other classes, reused by the victim
        others = ", ".join(c for i, c in enumerate(CLASSES[g.dataset]) if i not in g.class_ids)
        st.markdown(f"Two networks learned the same job on **other** {DATASET_NAMES[g.dataset]} classes ({others}): "
                    "the **LGM** one (right) was trained to keep every class inside a round cloud, a *Gaussian*; the "
                    "ordinary **softmax** one (left) only had to get the answers right. Inside, each turns an image "
                    "into a short list of numbers, its **features**. A victim now reuses those features for new "
                    f"classes, {', '.join(classes)}, as people reuse a network someone else trained. Each dot below "
                    "is one test image of those classes, placed by its features (flattened onto the page), coloured "
                    "by its true class. (The LGM network's own Gaussians describe the classes it was trained on, so "
                    "none are drawn.) These are not the sidebar's models.")
    else:
        st.markdown(f"Two networks learned the same job: name the {DATASET_NAMES[g.dataset]} image. Inside, each one "
                    "turns an image into a short list of numbers, its **features**, and decides from those. Each dot "
                    "below is one test image, placed by its features (flattened onto the page), coloured by its true "
                    "class.\n\nThe **LGM** network (right) was trained to keep every class inside a round cloud, a "
                    "*Gaussian*: the ring is the cloud the model assumes for each class (two standard deviations, "
                    "with the cross at its centre). Its images actually sit well inside, packed around the centre. "
                    "The ordinary **softmax** network (left) only had to get the answers right.")
    c1, c2 = st.columns(2)
    c1.plotly_chart(_scatter(_by_head("softmax"), None, "Softmax network"), width="stretch", key="tour_net_s")
    c2.plotly_chart(_scatter(_by_head("lgm"), None, "LGM network"), width="stretch", key="tour_net_l")


def step_goal() -> None:
    st.markdown(f"An attacker wants a model that is trained *later* to call this **{T}** {article(B)} **{B}**. They cannot "
                f"touch this test image, and they cannot mislabel anything: all they may do is add a few training "
                f"images, honestly labelled **{B}**. Those images are the **poisons**; each starts from a real "
                f"**{B}** from the training data, its **base**.")
    cols = st.columns(1 + len(bases))
    show_image(cols[0], image_for_display(target), width=110, caption=f"the target: {named(T)}")
    for i, b in enumerate(bases):
        show_image(cols[1 + i], image_for_display(b), width=90, caption=f"base {i + 1}: {named(B)}")


def step_poison() -> None:
    judged = t_soft["judge"].get("clean_label") or []
    labelled = t_soft.get("labelled")
    if labelled:  # a labelled experiment: its judge's rejects were dropped before retraining
        spec = JUDGES[labelled["judge"]]
        voters = ("a separately trained network" if len(spec.members) == 1
                  else f"{len(spec.members)} separately trained networks")
        unseen = ", none of which the attacker had," if spec.new_classes_only else ""
        knn = " and the most similar real training images" if spec.knn else ""
        st.markdown(f"The attacker changes each base a little: every pixel by at most **{levels} of 255** grey "
                    f"levels (the **budget**). A judge stands in for a person checking the data: "
                    f"{voters}{knn}{unseen} vote on each "
                    f"image{' after it is saved again as a JPEG' if spec.purify.startswith('jpeg') else ''}. It "
                    f"called **{labelled['kept']} of the {labelled['crafted']}** poisons {article(B)} **{B}**; the "
                    f"other {labelled['crafted'] - labelled['kept']} a person might relabel, so they were **dropped** "
                    "before anything was retrained. A poison that passes is **clean-label**: correctly labelled, as "
                    "far as anyone looking can tell.")
    else:
        st.markdown(f"The attacker changes each base a little: every pixel by at most **{levels} of 255** grey levels "
                    f"(the **budget**). Two independent judges stand in for a person checking the data: a separately "
                    f"trained network and the most similar real training images. Both still call "
                    f"**{sum(judged)} of {len(judged)}** poisons {article(B)} **{B}**. A poison that passes is "
                    "**clean-label**: correctly labelled, as far as anyone looking can tell.")
    cols = st.columns(3)
    show_image(cols[0], image_for_display(bases[0]), width=140, caption=f"base: {named(B)}")
    show_image(cols[1], image_for_display(poisons[0]), width=140, caption=f"poison: still {named(B)} to the judges")
    show_image(cols[2], image_for_display(amplified(poisons[0], bases[0])), width=140,
                  caption="the change, made visible (grey: no change)")


def step_features() -> None:
    st.markdown(f"The changes are not random: they are chosen, step by step, to move the poison's **features** "
                f"towards the target's. On the page the poisons (black stars) look like {B}s, yet inside the "
                f"softmax network they have moved away from the {B}s, towards the {T} (gold diamond). Dotted lines "
                "show how far each poison moved from its base (white circle).")
    st.plotly_chart(_scatter(t_soft["model"], sc.softmax, "Softmax network: poisons crafted against it"),
                    width="stretch", key="tour_feat")


def step_fooled() -> None:
    called = classes[t_soft["victims"]["none"]["pred_after"]]
    fooled = t_soft["victims"]["none"]["success"]
    st.markdown(f"A **victim** is a copy of the network whose last layer is retrained on {g.config['n_clean']} clean "
                f"training images plus the {t_soft.get('n_stored', t_soft['n_poisons'])} poisons (the **transfer** setting: the feature part "
                f"stays as it was, as when people reuse a network someone else trained). Here the last layer is "
                f"retrained with a **{victim}**.")
    if not predict("fooled", f"Retrained on the poisons, will the softmax victim call the {T} {article(B)} {B}?",
                   ("yes, fooled", "no, not fooled"), "yes, fooled" if fooled else "no, not fooled"):
        return
    rows = control_rows(name, {**t_soft, "model_head": "softmax"}, classes, g.config)
    rare = "**Honestly: this is rare at this budget.** " if sc.successes < 0.2 * sc.trials else ""
    st.markdown(f"Afterwards the softmax victim calls the target {article(called)} **{called}**.\n\n"
                f"{rare}It happened in **{sc.successes} of {sc.trials}** shipped "
                "trials" + (", and it depends on how the victim is retrained:" if rows else "."))
    if rows:
        st.dataframe(rows, hide_index=True, width="stretch")
        st.caption("The same poisons, the same softmax features, other ways of retraining the last layer.")
    budget = load_bench("budget_mnist") if g.dataset == "mnist" else None
    if budget:
        st.markdown(f"A bigger budget works more often, but then the poisons stop looking like {B}s:")
        rows = budget["rows"]
        fig = budget_figure(rows, f"Success against the budget ({rows[0]['pairs']} target/base pairs per point)",
                            "budget: most grey levels any pixel may change (of 255)")
        clean = [r for r in rows if "softmax" in r["model"]]
        fig.add_trace(go.Scatter(x=[budget_levels(r["eps"]) for r in clean], y=[r["clean_label_rate"] for r in clean],
                                 mode="lines+markers", name="poisons still clean-label (Softmax)",
                                 line={"dash": "dash", "color": "grey"}))
        fig.update_layout(yaxis_title="share")
        st.plotly_chart(fig, width="stretch", key="tour_budget")


def step_alarm() -> None:
    if t_lgm is None:
        st.warning("The shipped experiment has no LGM trial on this target.")
        return
    v = t_lgm["victims"].get("lgm")
    caught = sum(v["flagged"]) if v and v["flagged"] else 0
    n_lgm = len(v["flagged"]) if v and v["flagged"] else t_lgm["n_poisons"]
    if not predict("alarm", f"The same target and bases, attacked through the LGM network. How many of its "
                   f"{n_lgm} poisons will the LGM model's own filter catch?", ("none", "some", "all"),
                   "none" if caught == 0 else ("all" if caught == n_lgm else "some")):
        return
    st.markdown(f"The same target and bases, attacked through the **LGM** network. It gives every training image a "
                f"score: how *unlikely* are its features under the Gaussian of the class it claims? A poison claims "
                f"{B} but was pushed towards the {T}s, so it scores as very unlikely. The dashed line is set so "
                f"that only {100 * fpr:.0f}% of clean images are wrongly thrown away (the **false-positive "
                f"rate**).")
    if v and v["scores"]:
        q = v["clean_quantiles"]  # 1, 5, 25, 50, 75, 95, 99th percentiles
        fig = go.Figure(go.Box(y=["clean training images"], q1=[q[2]], median=[q[3]], q3=[q[4]], lowerfence=[q[0]],
                               upperfence=[q[6]], orientation="h", name="clean (1st-99th percentile)",
                               marker_color=BLUE))
        fig.add_trace(go.Scatter(x=v["scores"], y=["poisons"] * len(v["scores"]), mode="markers", name="poisons",
                                 marker={"symbol": "star", "size": 18, "color": "black",
                                         "line": {"width": 1, "color": "white"}}))
        fig.add_vline(x=v["threshold"], line_dash="dash",
                      annotation_text=f"threshold ({100 * fpr:.0f}% of clean images above)")
        fig.update_layout(height=280, xaxis_title="how unlikely under the claimed class (higher: more suspicious)",
                          showlegend=False, margin={"t": 30})
        st.plotly_chart(fig, width="stretch", key="tour_alarm")
        st.markdown(f"Here it caught **{sum(v['flagged'])} of {len(v['flagged'])}** poisons.")
    if cell_rate:
        st.markdown(f"Over all {cell_rate['trials']} shipped trials it caught **{100 * cell_rate['poisons_flagged']:.0f}%"
                    f"** of poisons at this setting. Its **AUC** is {cell_rate['auc']:.3f}: the chance that a random "
                    f"poison scores above a random clean image (1.0 is a perfect alarm, 0.5 a coin toss).")


def step_measured() -> None:
    none = t_lgm["victims"]["none"] if t_lgm else None
    if none is not None and not predict(
            "lgm_victim", f"And with no filter at all: will the LGM victim, retrained on its poisons, call the {T} "
            f"{article(B)} {B}?", ("yes, fooled", "no, not fooled"), "yes, fooled" if none["success"] else "no, not fooled"):
        return
    dose = load_bench("dose_mnist") if g.dataset == "mnist" else None
    if none is not None and not none["success"]:
        called = classes[none["pred_after"]]
        still = "still " if called == T else ""
        mechanism = (" Why? Its last layer decides by distance to each class's centre, and the ordinary "
                     f"{B}s of the clean training set (about {g.config['n_clean'] // len(classes)}) pin that centre "
                     "in place.")
        if dose:
            mechanism += (f" A sanity test shows it: put *exact copies* of the target's features, labelled {B}, into "
                          "the training data. How many copies flip each victim?")
        if (g.config.get("victim") or {}).get("head", "warm") != "warm":  # not the LGM head: measured, not explained
            cells = [c for c in primary_cells(load_results().get(name, {})) if (c["model"], c["attack"], c["defence"])
                     == (t_lgm["model"], sc.attack, "none")]
            mechanism = (f" Over the shipped trials this victim, on the LGM network's features, was fooled in "
                         f"**{sum(c['successes'] for c in cells)} of {sum(c['trials'] for c in cells)}** (the softmax "
                         f"one in {sc.successes} of {sc.trials}); **Attack outcomes** has every victim and filter.")
        st.markdown(f"Even with **no** filter, the LGM victim {still}called the target {article(called)} **{called}**, "
                    f"not {article(B)} {B}." + mechanism)
    elif none is not None:
        st.markdown(f"With no filter, the LGM victim was fooled too: it calls the target {article(B)} **{B}**. "
                    "Its filter is what stands between the poisons and the victim here.")
    if dose:
        rows = [r for r in dose["rows"] if r["kind"] == "copies"]
        st.plotly_chart(curve_figure(rows, "count", "victim", f"Exact copies needed ({rows[0]['pairs']} targets)",
                                     "copies added (log scale)", log_x=True), width="stretch", key="tour_dose")
        st.caption(copies_needed(rows) + " So part of the LGM's robustness is its head, not only its filter: both "
                   "are measured separately in **Attack outcomes**.")
    st.markdown("Words used: **features** (what the network computes before deciding), **budget** (most any pixel "
                "may change), **clean-label** (still correctly labelled to a person), **victim** (a model retrained "
                "on the poisoned data), **likelihood** (how well a point fits a class's Gaussian), **false-positive "
                "rate** (clean images wrongly thrown away), **AUC** (how well a score separates poisons from clean "
                "images). Explore further in **Poison lab** and **Poison gallery**.")


def _lgm_ladder() -> dict | None:
    """The shipped ladder of this data set that measured the LGM filter on the LGM model (the fullest
    such), or None: the eighth step is shown only with one."""
    ladders = {n: l for n, l in ladders_for(dataset).items()
               if any((r["model"], r["filter"], r["weight"]) == ("lgm", "lgm", 0) for r in l["rows"])}
    return ladders.get(fullest_ladder(ladders))


def step_adaptive() -> None:
    """The last lesson, from the shipped adaptive ladder: what the filter stops, and what an attacker
    who knows the filters can still do (``core.ladder``)."""
    ladder = _lgm_ladder()
    static = next(r for r in ladder["rows"] if (r["model"], r["filter"], r["weight"]) == ("lgm", "lgm", 0))
    clearly_more = significant_gain(ladder, "lgm", "lgm")
    if not predict("adaptive", "Now the attacker *knows* the filters and changes the poisons to look typical of "
                   "their class. Will the LGM victim, behind its filter, be fooled on more targets than by the plain "
                   "attack?", ("yes, clearly more", "no, not clearly more"),
                   "yes, clearly more" if clearly_more else "no, not clearly more"):
        return
    st.markdown(f"Measured on {static['trials']} targets, {static['n_poisons']} poisons each "
                f"({ATTACKS[ladder['attack']].label}). Each point is one attack: how many of its poisons the filter "
                "flags (right: more) against how often the victim behind the filter is still fooled (up: more). "
                "Hollow: the plain attack; filled: the attack that knows the filter, at growing strength w; a star: "
                "an attack built to hide from *another* filter, which did better against this one. The dotted line: "
                "the plain attack with no filter at all.")
    st.plotly_chart(ladder_figure(ladder, "lgm", "LGM network: its filter against an attacker who knows it",
                                  filters=("lgm",)), width="stretch", key="tour_ladder")
    st.markdown(ladder_sentence(ladder, "lgm", "lgm"))
    st.caption("Each attack is compared with the plain one on the same targets. p is the chance of a difference at "
               "least this large if knowing the filter changed nothing: below 0.05 it is unlikely to be luck. A "
               "filter is only as good as the attacker it was tested against: the Defences page has every filter's "
               "curve, on both networks. Measured on these models, not the sidebar's: "
               + ", ".join(p.rsplit("/", 1)[-1] for p in ladder["config"]["models"].values()) + ".")


def feature_dims(gallery) -> str:
    """ "64 features each", or "2 and 64 features" when the two models differ."""
    dims = sorted({m["feat_dim"] for m in gallery.models.values()})
    return f"{dims[0]} features each" if len(dims) == 1 else f"{' and '.join(map(str, dims))} features"


STEPS = [("Two networks, one job", step_networks), ("The attacker's plan", step_goal),
         ("A poison: a small change", step_poison), ("Inside the network", step_features),
         ("Is the softmax victim fooled?", step_fooled), ("Will the LGM network raise the alarm?", step_alarm),
         ("And the LGM victim? What we measured", step_measured)]
if _lgm_ladder() is not None:  # a shipped adaptive ladder on this data set: the last lesson
    STEPS.append(("An attacker who knows the filter", step_adaptive))


def _go(delta: int) -> None:
    st.session_state["tour_step"] = min(max(0, st.session_state.get("tour_step", 0) + delta), len(STEPS) - 1)


step = min(st.session_state.get("tour_step", 0), len(STEPS) - 1)
st.progress((step + 1) / len(STEPS), f"Step {step + 1} of {len(STEPS)}")
st.subheader(STEPS[step][0])
STEPS[step][1]()
c1, c2, _ = st.columns([1, 1, 4])
c1.button("Back", on_click=_go, args=(-1,), disabled=step == 0, key="tour_back")
c2.button("Next", on_click=_go, args=(1,), disabled=step == len(STEPS) - 1, type="primary", key="tour_next")
st.caption(f"Every step shows trial {t_soft['trial']} of the shipped experiment `{name}` "
           f"(softmax and LGM, {feature_dims(g)}), "
           "chosen by a fixed rule. " + SHOWCASE_RULE)
