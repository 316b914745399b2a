"""Poison lab: craft poisons against both models, watch them travel, retrain a victim, compare."""

import numpy as np
import plotly.graph_objects as go
import streamlit as st
import torch

from core.attacks import attack_knobs, default_eps
from core.lab import run_lab
from core.models import to_input
from core.uploads import UploadError, image_from_bytes
from pages.common import demo, feature_figure, features, image_for_display, model, projection, selected_index, \
    sidebar

MAX_POISONS, MAX_ITERS = 10, 1000  # one student must not starve the rest of the class
ATTACK_NAMES = {"fc": "Feature collision (Poison Frogs)", "fc-adaptive": "Defence-aware feature collision",
                "bp": "Bullseye polytope", "cp": "Convex polytope"}

dataset, space, pair = sidebar()
ds = demo(dataset)
st.title("Poison lab")
st.markdown("Pick a **target** (the test image the attacker wants misclassified) and a **base class** "
            "(what it should be called). The lab crafts poisons that look like base-class training images, "
            "retrains a victim on clean data plus the poisons, and checks whether the LGM model's own "
            "likelihood filter would have caught them.")

# --- target -----------------------------------------------------------------------------------------
how = st.radio("Choose the target", ["by class and index", "click it in the scatter", "upload an image"],
               horizontal=True, key="target_how")
target, target_label = None, None
if how == "by class and index":
    c1, c2 = st.columns(2)
    t_class = c1.selectbox("Target class", range(len(ds.classes)), format_func=lambda c: ds.classes[c])
    pool = np.flatnonzero(ds.y_test == t_class)
    k = c2.number_input("Which one of that class", 0, len(pool) - 1, 0, help=f"0..{len(pool) - 1}")
    ti = int(pool[int(k)])
    target, target_label = ds.x_test[ti:ti + 1], int(ds.y_test[ti])
elif how == "click it in the scatter":
    proj = projection(pair["softmax"], "raw" if space == "2-D" else "pca")
    pts = proj.transform(features(pair["softmax"], "test"))
    event = st.plotly_chart(feature_figure(pts, ds.y_test, ds.classes, "softmax model: click a target"),
                            on_select="rerun", selection_mode=("points",), key="lab_pick", width="stretch")
    ti = selected_index(event)
    if ti is not None:
        target, target_label = ds.x_test[ti:ti + 1], int(ds.y_test[ti])
else:
    up = st.file_uploader("An image (PNG/JPEG, up to 5 MB)", type=["png", "jpg", "jpeg", "gif", "bmp", "webp"])
    if up is not None:
        h, w, c = ds.image_shape
        try:
            img = image_from_bytes(up.getvalue(), (h, w), c)
        except UploadError as exc:
            st.error(f"Cannot use this upload: {exc}")
        else:
            m, _ = model(pair["softmax"])
            with torch.no_grad():
                guess = int(m(to_input(img[None])).argmax())
            target_label = st.selectbox("What is it really?", range(len(ds.classes)), index=guess,
                                        format_func=lambda c: ds.classes[c],
                                        help="The softmax model's guess is preselected.")
            target = img[None]
if target is None:
    st.info("Choose a target to go on.")
    st.stop()

# --- base and attack ----------------------------------------------------------------------------------
left, right = st.columns([1, 2])
left.image(image_for_display(target[0]), width=110, caption=f"target: {ds.classes[target_label]}")
with right:
    others = [c for c in range(len(ds.classes)) if c != target_label]
    base_class = st.selectbox("Base class (what the target should become)", others, format_func=lambda c: ds.classes[c])
    attack = st.selectbox("Attack", list(ATTACK_NAMES), format_func=ATTACK_NAMES.get)
    c1, c2, c3 = st.columns(3)
    n_poisons = c1.slider("Poisons", 1, MAX_POISONS, 5)
    iters = c2.slider("Iterations", 10, MAX_ITERS, 200, step=10)
    fpr = c3.select_slider("Filter false-positive rate", [0.01, 0.02, 0.05, 0.1], value=0.05,
                           help="Share of clean training images the filter may throw away.")
    settings: dict = {"record_every": max(1, iters // 40)}
    if attack.startswith("fc"):
        c1, c2, c3 = st.columns(3)
        settings["beta0"] = c1.number_input("beta0 (stay close to the base)", 0.0, 1e6, 0.25, format="%.3g")
        settings["opacity"] = c2.slider("Watermark opacity", 0.0, 1.0, 0.3,
                                        help="Blend this much of the target into the base first.")
        settings["eps"] = c3.slider("l-inf budget (0 = none)", 0.0, 1.0, 0.0) or None
        if attack == "fc-adaptive":
            settings["adaptive_weight"] = st.slider(
                "Stealth weight", 0.0, 20.0, 1.0,
                help="How hard the poison tries to look likely under the base class's Gaussian.")
    else:
        settings["eps"] = st.slider("l-inf budget", 0.01, 1.0, default_eps(dataset))
    seed = st.number_input("Seed", 0, 2**31 - 1, 0)

if st.button("Craft poisons and retrain the victims", type="primary"):
    results = {}
    bar = st.progress(0.0, "starting")
    steps = iter(np.linspace(0.1, 1.0, 6))
    for head in ("softmax", "lgm"):
        m, _ = model(pair[head])
        # the defence-aware term needs a Gaussian head; the softmax model gets plain collision
        head_attack = "fc" if attack == "fc-adaptive" and head == "softmax" else attack
        head_knobs = attack_knobs(head_attack, dataset, iters, **settings)
        try:
            results[head] = run_lab(m, ds, target, target_label, base_class, head_attack, head_knobs, n_poisons,
                                    seed=int(seed), fpr=fpr, progress=lambda msg: bar.progress(float(next(steps)), msg))
        except ValueError as exc:
            st.error(str(exc))
            st.stop()
    bar.empty()
    st.session_state["lab"] = {"results": results, "classes": ds.classes, "base_class": base_class}

lab = st.session_state.get("lab")
if not lab:
    st.stop()
results, base_class = lab["results"], lab["base_class"]

# --- verdicts -------------------------------------------------------------------------------------------
st.subheader("Verdict")
rows = []
for head, r in results.items():
    rows.append({"victim": f"{head}", "target now predicted as": ds.classes[r.outcome.pred_after],
                 "attack succeeded": "yes" if r.outcome.success else "no",
                 "clean accuracy": f"{100 * r.outcome.clean_acc_after:.1f}%"})
    if head == "lgm":
        rows.append({"victim": "lgm + likelihood filter", "target now predicted as": ds.classes[r.filtered.pred_after],
                     "attack succeeded": "yes" if r.filtered.success else "no",
                     "clean accuracy": f"{100 * r.filtered.clean_acc_after:.1f}%"})
st.dataframe(rows, hide_index=True, width="stretch")

for head, r in results.items():
    st.subheader(f"{'Softmax' if head == 'softmax' else 'LGM'} model: {r.poisons.params['attack']}, "
                 f"{r.poisons.time_s:.1f} s")
    i = st.slider("Poison", 0, len(r.poisons.poisons) - 1, 0, key=f"which_{head}") if len(r.poisons.poisons) > 1 else 0
    diff = r.poisons.poisons[i] - r.poisons.bases[i]
    amp = 0.5 + diff / (2 * max(1e-6, float(np.abs(diff).max())))
    cs = st.columns(4)
    cs[0].image(image_for_display(r.poisons.bases[i]), width=110, caption=f"base ({ds.classes[base_class]})")
    cs[1].image(image_for_display(r.poisons.poisons[i]), width=110, caption="poison")
    cs[2].image(image_for_display(r.poisons.target[0]), width=110, caption="target")
    cs[3].image(image_for_display(amp), width=110, caption=f"perturbation, amplified (l-inf {np.abs(diff).max():.2f})")

    c_path, c_hist = st.columns(2)
    proj = projection(pair[head], "raw" if space == "2-D" else "pca")
    pts = proj.transform(features(pair[head], "test"))
    step = c_path.slider("Crafting step", 0, len(r.poisons.traj_iters) - 1, len(r.poisons.traj_iters) - 1,
                         key=f"step_{head}", help="Move through the recorded trajectory.")
    path = proj.transform(r.poisons.traj_features[: step + 1, i])
    tgt = proj.transform(r.poisons.target_feature[None])
    extra = [go.Scatter(x=path[:, 0], y=path[:, 1], mode="lines+markers", name="poison's path",
                        line={"color": "black"}, marker={"size": 4}),
             go.Scatter(x=tgt[:, 0], y=tgt[:, 1], mode="markers", name="target",
                        marker={"symbol": "diamond", "size": 16, "color": "black"})]
    gauss = tuple(g.numpy() for g in model(pair[head])[0].head.gaussians()) if head == "lgm" else None
    c_path.plotly_chart(feature_figure(pts, ds.y_test, ds.classes, f"iteration {r.poisons.traj_iters[step]}", proj,
                                       gauss, extra), width="stretch", key=f"path_{head}")
    hist = go.Figure([go.Histogram(x=r.clean_scores, name="clean training images", opacity=0.6, nbinsx=40),
                      go.Histogram(x=r.poison_scores, name="poisons", opacity=0.8, nbinsx=10)])
    hist.add_vline(x=r.threshold, line_dash="dash", annotation_text="filter threshold")
    label = "-log-likelihood under claimed class" if r.defence == "lgm" else "distance to claimed class centre"
    hist.update_layout(barmode="overlay", height=380, title=label, margin={"t": 40})
    c_hist.plotly_chart(hist, width="stretch", key=f"hist_{head}")
    c_hist.caption(f"{int(r.flagged.sum())} of {len(r.flagged)} poisons flagged; the filter also dropped "
                   f"{100 * r.clean_flagged:.1f}% of clean images.")
