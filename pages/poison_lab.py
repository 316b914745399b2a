"""Poison lab: craft poisons against both models, watch them travel, retrain a victim, compare."""

import time

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.attacks import ATTACKS, budget_levels, default_eps
from core.defences import label as defence_label
from core.export import amplified_change, contact_sheet, largest_change, poisons_npz
from core.lab import (LAB_CLEAN, LAB_MAX_ITERS, LAB_MAX_POISONS, LAB_TEST, guess_label, lab_default, lab_runs,
                      own_filter_result, run_lab_pair)
from core.pipeline import plan_trial
from core.regions import covering_grid
from core.report import head_label
from core.uploads import UploadError, image_from_bytes
from pages.common import HEADS, bank, demo, features, judge, model, projection, sidebar, targets
from pages.jobs_ui import heavy_job
from pages.rounds_ui import store as round_store
from pages.plots import (display_sample, feature_figure, image_for_display, poison_markers, regions_heatmap,
                         selected_index, show_image, space_figure)
from pages.showcase import draw_showcase, no_showcase


dataset, space, pair = sidebar()
MAP_POINTS = 300  # test images drawn in each of a result's maps (pages.plots.display_sample)
# The browser applies the page's new elements in batches and draws a batch in one go: when the verdict
# and the charts arrived together, a browser without a GPU showed the verdict only once the charts were
# drawn, 2-3 s later. A pause between them, once per result, lets it draw the verdict first
# (bench/lab_first_press.py: verdict shown 5.4-7.7 s -> 4.5-4.6 s after the press; BENCHMARKS).
VERDICT_FIRST_S = 0.3
ds = demo(dataset)
st.title("Poison lab")
st.markdown("Pick a **target** (the test image the attacker wants misclassified) and a **base class** "
            "(what it should be called). The lab crafts poisons that look like base-class training images, "
            "retrains a victim on clean data plus the poisons, and checks whether the LGM model's own "
            "likelihood filter would have caught them.")

live_round = round_store().current()
if live_round is not None and live_round.accepting():
    st.info(f"A red-team round is open (round {live_round.id}): craft here, then submit on the **Red-team round** page.")

opening = lab_default(dataset, space)  # the measured first press, when the sidebar's pair is the one measured
if opening is not None and not opening.fits(pair):
    opening = None

# --- target -----------------------------------------------------------------------------------------
how = st.radio("Choose the target", ["by class and index", "click it in the scatter", "upload an image"],
               horizontal=True, key="target_how")
target, target_label = None, None
target_index = None
if how == "by class and index":
    c1, c2 = st.columns(2)
    first_class = int(ds.y_test[opening.target_index]) if opening else 0
    t_class = c1.selectbox("Target class", range(len(ds.classes)), index=first_class,
                           format_func=lambda c: ds.classes[c])
    pool = np.intersect1d(np.flatnonzero(ds.y_test == t_class), targets(dataset, space))  # both models right
    first = np.flatnonzero(pool == opening.target_index) if opening and t_class == first_class else []
    k = c2.number_input("Which one of that class", 0, len(pool) - 1, int(first[0]) if len(first) else 0,
                        help=f"0..{len(pool) - 1}: test images of that class that both models classify correctly")
    target_index = int(pool[int(k)])
    target, target_label = ds.x_test[target_index:target_index + 1], int(ds.y_test[target_index])
elif how == "click it in the scatter":
    proj = projection(pair["softmax"], "raw" if space == "2-D" else "pca")
    pts = proj.transform(features(pair["softmax"], "test"))
    event = st.plotly_chart(feature_figure(pts, ds.y_test, ds.classes, "softmax model: click a target"),
                            on_select="rerun", selection_mode=("points",), key="lab_pick", width="stretch")
    target_index = selected_index(event)
    if target_index is not None:
        target, target_label = ds.x_test[target_index:target_index + 1], int(ds.y_test[target_index])
else:
    up = st.file_uploader("An image (PNG/JPEG, up to 5 MB)", type=["png", "jpg", "jpeg", "gif", "bmp", "webp"])
    if up is not None:
        h, w, c = ds.image_shape
        try:
            img = image_from_bytes(up.getvalue(), (h, w), c)
        except UploadError as exc:
            st.error(f"Cannot use this upload: {exc}")
        else:
            guess = guess_label(model(pair["softmax"])[0], img)
            target_label = st.selectbox("What is it really?", range(len(ds.classes)), index=guess,
                                        format_func=lambda c: ds.classes[c],
                                        help="The softmax model's guess is preselected.")
            target = img[None]
if target is None:
    st.info("Choose a target to go on.")
    st.stop()

# --- base and attack ----------------------------------------------------------------------------------
left, right = st.columns([1, 2])
show_image(left, image_for_display(target[0]), width=110, caption=f"target: {ds.classes[target_label]}")
with right:
    others = [c for c in range(len(ds.classes)) if c != target_label]
    opens_here = opening is not None and target_index == opening.target_index
    base_class = st.selectbox("Base class (what the target should become)", others,
                              index=others.index(opening.base_class) if opens_here else 0,
                              format_func=lambda c: ds.classes[c])
    attack = st.selectbox("Attack", list(ATTACKS), index=list(ATTACKS).index(opening.attack) if opening else 0,
                          format_func=lambda a: ATTACKS[a].label,
                          help="; ".join(f"{a.label}: {a.summary}" for a in ATTACKS.values()))
    c1, c2, c3 = st.columns(3)
    n_poisons = c1.slider("Poisons", 1, LAB_MAX_POISONS, opening.n_poisons if opening else 5)
    iters = c2.slider("Crafting steps", 10, LAB_MAX_ITERS, opening.iters if opening else 200, step=10)
    fpr = c3.select_slider("Filter: clean images it may throw away", [0.01, 0.02, 0.05, 0.1], value=0.05,
                           format_func=lambda f: f"{100 * f:.0f}%",
                           help="The filter's false-positive rate: the share of clean training images it "
                                "wrongly flags. Its threshold is set so that exactly this share goes.")
    clean_eps = default_eps(dataset)
    clean_level = budget_levels(clean_eps)  # what the poisons' 8-bit pixels can realise
    level = st.slider("Pixel budget: the most any pixel may change (out of 255)", 1, 255, clean_level,
                      help=f"{clean_level} is this data set's clean-label budget: in our measurements at least 90% "
                           "of poisons crafted within it still look like their base class to the judges. Larger "
                           "budgets are allowed, but the poisons stop being clean-label.")
    eps = clean_eps if level == clean_level else level / 255  # the default is exactly the experiments' budget
    if level > clean_level:
        st.warning(f"Above the clean-label budget ({clean_level}/255): a person may see the target in these "
                   "poisons; the judges' verdict below says how many still look like the base.")
    settings: dict = {"record_every": max(1, iters // 40), "eps": eps, "iters": iters}
    widgets = ATTACKS[attack].settings.widgets()  # the attack's own knobs, as its registry entry offers them
    for col, w in zip(st.columns(len(widgets)) if widgets else [], widgets):
        wide = w.hi - w.lo > 1000  # a weight over orders of magnitude: typed, not slid
        settings[w.name] = (col.number_input(w.label, w.lo, w.hi, w.default, format="%.3g", help=w.help) if wide
                            else col.slider(w.label, w.lo, w.hi, w.default, help=w.help))
    seed = st.number_input("Seed", 0, 2**31 - 1, 0)
measured = (opens_here and (base_class, attack, n_poisons, iters, int(seed), fpr, level)
            == (opening.base_class, opening.attack, opening.n_poisons, opening.iters, 0, 0.05, clean_level))
if measured:  # exactly the press that was measured (bench/lab_default.py: seed 0, 5% false positives)
    t_name, b_name = ds.classes[target_label], ds.classes[base_class]
    st.caption(f"The lab opens on this {t_name} with base class {b_name}, chosen by measurement: in the softmax "
               f"model's features it lies close to where that model puts the {b_name} images. With these settings "
               f"the softmax victim is fooled and the LGM victim is not; random noise of the same size in place of "
               f"the poisons fools neither, so it is the poisons that do it. Press the button, then change anything.",
               help=f"Rule: {opening.why}. Measured with seed 0 ({opening.source}).")

key = (dataset, space, tuple(sorted(pair.items())))  # what a result was made for
pressed = st.button("Craft poisons and retrain the victims", type="primary")
work = None
if pressed:
    try:
        plan = plan_trial(ds, int(seed), targets(dataset, space), n_poisons=n_poisons, n_clean=LAB_CLEAN, n_test=LAB_TEST,
                          target_index=target_index, base_class=base_class,
                          external_label=target_label if target_index is None else None, judge=judge(dataset))
    except ValueError as exc:
        st.error(str(exc))
        st.stop()
    # an attack a head cannot take falls back (core.lab.lab_runs): the softmax model gets plain collision
    runs = lab_runs({head: model(pair[head])[0] for head in HEADS}, attack, dataset, trial_seed=int(seed),
                    n_poisons=n_poisons, **settings)
    made_for = {"key": key, "base_class": base_class}
    the_judge, outside = judge(dataset), target if target_index is None else None
    banks = {head: bank(pair[head]) for head in runs}

    def craft_job(job):
        steps = iter(np.linspace(0.05, 0.95, 12))
        results = run_lab_pair(runs, ds, plan, fpr=fpr, judge=the_judge, target=outside, banks=banks,
                               progress=lambda msg: job.report(float(next(steps, 0.95)), msg))
        return {"results": results, **made_for}
    work = craft_job
finished = heavy_job("Poison lab", pressed, work)
if finished is not None:
    st.session_state["lab"] = finished

lab = st.session_state.get("lab")
if not lab or lab["key"] != key:  # nothing yet, or made for another data set / feature space / models
    st.subheader("Until you craft: a shipped example")
    if not draw_showcase(dataset, space):
        st.info(f"{no_showcase(dataset, space)}: craft your own above.")
    st.stop()
results, base_class = lab["results"], lab["base_class"]

# --- verdicts -------------------------------------------------------------------------------------------
st.subheader("Verdict")
rows = []
for head, r in results.items():
    for name, v in r.victims.items():
        victim = head_label(head) + ("" if name == "none" else f" + {defence_label(name)}")
        rows.append({"victim (retrained on the poisoned data)": victim,
                     "target now called": ds.classes[v.outcome.pred_after],
                     "poisoned?": "yes" if v.success else "no",
                     "poisons the filter let through": f"{v.poisons_kept} of {len(r.poisons.poisons)}",
                     "accuracy on clean test images": f"{100 * v.outcome.clean_acc_after:.1f}%"})
st.table(rows, hide_index=True)  # plain HTML: drawn with the heading, not after the charts as a canvas table was
for head, r in results.items():
    if r.verdict is not None:
        st.caption(f"{head_label(head)} poisons judged clean-label, that is called {ds.classes[base_class]} by "
                   f"{judge(dataset).who}: {int(r.verdict.clean_label.sum())} of {len(r.verdict.clean_label)}.")

if finished is not None:  # the run that shows a new result: the browser draws the verdict first (see VERDICT_FIRST_S)
    time.sleep(VERDICT_FIRST_S)
# one tab per model, and only the open one is drawn: the eight charts of both models at once kept a
# browser without a GPU busy for 3-6 s before it showed the verdict above (BENCHMARKS "first press")
tabs = st.tabs([f"{head_label(head)} model" for head in results], key="lab_model_tab", on_change="rerun")
for tab, (head, r) in zip(tabs, results.items()):
    if not tab.open:
        continue
    with tab:
        st.subheader(f"{head_label(head)} model: {ATTACKS[r.attack].label}, "
                     f"{r.poisons.time_s:.1f} s")
        i = st.slider("Poison", 0, len(r.poisons.poisons) - 1, 0, key=f"which_{head}") if len(r.poisons.poisons) > 1 else 0
        cs = st.columns(4)
        show_image(cs[0], image_for_display(r.poisons.bases[i]), width=110, caption=f"base ({ds.classes[base_class]})")
        show_image(cs[1], image_for_display(r.poisons.poisons[i]), width=110, caption="poison")
        show_image(cs[2], image_for_display(r.poisons.target[0]), width=110, caption="target")
        show_image(cs[3], amplified_change(r.poisons.poisons[i], r.poisons.bases[i]), width=110,
                    caption=f"change, amplified (largest {largest_change(r.poisons.poisons[i], r.poisons.bases[i])} "
                            "of 255 per pixel)")

        d1, d2, _ = st.columns([1, 1, 2])
        d1.download_button("Poisons as a PNG sheet",
                           lambda r=r: contact_sheet(r.poisons.target[0], r.poisons.bases, r.poisons.poisons),
                           file_name=f"poisons_{head}.png", mime="image/png", key=f"png_{head}")
        d2.download_button("Poisons as .npz", lambda r=r: poisons_npz(r.poisons.target[0], r.poisons.bases, r.poisons.poisons,
                                                          target_label=r.poisons.target_label, base_class=base_class,
                                                          base_indices=r.plan.base_indices, target_index=r.plan.target_index,
                                                          attack=r.attack),
                           file_name=f"poisons_{head}.npz", mime="application/octet-stream", key=f"npz_{head}")
        c_path, c_hist = st.columns(2)
        proj = projection(pair[head], "raw" if space == "2-D" else "pca")
        recorded = list(range(len(r.poisons.traj_iters)))  # the last record is the poison as saved (8-bit)
        step = c_path.select_slider("Crafting step", recorded, value=recorded[-1], key=f"step_{head}",
                                    format_func=lambda k: f"{int(r.poisons.traj_iters[k])}" + (
                                        " (saved poison)" if k == recorded[-1] else ""),
                                    help="Move through the recorded path; the number is the crafting iteration.")
        path = proj.transform(r.poisons.traj_features[: step + 1, i])
        tgt = proj.transform(r.poisons.target_feature[None])
        extra = [go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines+markers", name="poison's path",
                            line={"color": "black"}, marker={"size": 4}),
                 go.Scatter(x=tgt[:, 0], y=tgt[:, 1], mode="markers", name="target",
                            marker={"symbol": "diamond", "size": 16, "color": "black"})]
        own = own_filter_result(r, head)
        c_path.plotly_chart(space_figure(pair[head], f"after {r.poisons.traj_iters[step]} crafting steps", proj.method,
                                         extra=extra, threshold=own.detection["threshold"] if own.defence == "lgm" else None,
                                         max_points=MAP_POINTS),
                            width="stretch", key=f"path_{head}")
        if own.defence == "lgm" and space == "2-D":
            c_path.caption("Dashed rings: the LGM filter's threshold. A poison outside the ring of the class it "
                           "claims is flagged and thrown away before the victim is retrained.")
        poison_scores = np.asarray(own.detection["poison_scores"])
        hist = go.Figure([go.Histogram(x=own.clean_scores, name="clean training images", opacity=0.6, nbinsx=40)])
        hist.add_trace(go.Scatter(x=poison_scores, y=np.zeros(len(poison_scores)), mode="markers", name="poisons",
                                  marker={"symbol": "star", "size": 14, "color": "black", "line": {"width": 1,
                                                                                                  "color": "white"}}))
        hist.add_vline(x=own.detection["threshold"], line_dash="dash", annotation_text="filter threshold")
        label = ("how unlikely under the claimed class (minus log-likelihood)" if head == "lgm"
                 else "distance to the claimed class's centre")
        # a few far-out clean images must not squash the rest into one bar: show up to their 99.5th percentile
        right = max(float(np.quantile(own.clean_scores, 0.995)), float(poison_scores.max()), own.detection["threshold"])
        left = float(min(own.clean_scores.min(), poison_scores.min()))
        hist.update_layout(height=380, title=label, margin={"t": 40}, xaxis_title=label, yaxis_title="clean images",
                           xaxis_range=[left - 0.05 * (right - left), right + 0.08 * (right - left)])
        c_hist.plotly_chart(hist, width="stretch", key=f"hist_{head}")
        c_hist.caption(f"{round(own.detection['poisons_flagged'] * len(poison_scores))} of {len(poison_scores)} poisons "
                       f"flagged; the filter also dropped {100 * own.detection['clean_flagged']:.1f}% of clean images.")
        if space == "2-D":  # the head is the whole decision rule in the plane: draw it before and after
            raw = features(pair[head], "test")
            grid = covering_grid(np.concatenate([raw, r.poison_features, r.poisons.target_feature[None]]))
            shown = display_sample(len(raw), MAP_POINTS)
            marks = poison_markers(r.poisons.target_feature, r.poisons.traj_features[0], r.poison_features)
            after = r.victims["none"]
            cols = st.columns(2)
            for col, (title, h) in zip(cols, [("Before retraining", model(pair[head])[0].head),
                                              (f"After retraining with the poisons: target called "
                                               f"{ds.classes[after.outcome.pred_after]}", after.head)]):
                col.plotly_chart(feature_figure(raw[shown], ds.y_test[shown], ds.classes, title, proj,
                                                None, marks, background=regions_heatmap(h, grid)),
                                 width="stretch", key=f"regions_{head}_{title[:6]}")
            st.caption("Background colour: the class the head would give a feature at that spot. A victim is poisoned "
                       "when the target's spot (gold diamond) changes colour to the base class.")
        if len(ds.y_test) > MAP_POINTS:
            st.caption(f"Dots in these maps: {MAP_POINTS} of the sample's {len(ds.y_test)} test images, the same "
                       "ones in every map (the Feature space page draws them all).")
