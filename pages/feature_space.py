"""Feature space: where each test image lands inside the softmax and the LGM network."""

import streamlit as st

from core.lab import point_report
from core.report import head_label
from pages.common import DATASET_NAMES, demo, features, model, sidebar
from pages.plots import image_for_display, likelihood_heatmap, selected_index, show_image, space_figure

dataset, space, pair = sidebar()
ds = demo(dataset)
st.title("Feature space")
st.markdown("Each dot is a test image, placed where the network's second-to-last layer (its *features*) puts it. "
            "The LGM model is trained so that every class forms a Gaussian cloud; each ring is the cloud the "
            "model assumes (two standard deviations unless you ask for more). Click a dot to see the image."
            + (" With many features the rings are much wider than the clouds of dots: the model assumes a spread of "
               "1 in every feature direction, and training packs each class far tighter than that."
               if space == "high-d" else ""))
c_rings, c_shade = st.columns(2)
RINGS = {"2 standard deviations": (2,), "1, 2 and 3": (1, 2, 3)}
rings = c_rings.segmented_control("Rings around each LGM class", list(RINGS), default="2 standard deviations",
                                  key="fs_rings")
sigmas = RINGS.get(rings, (2,))
shade = space == "2-D" and c_shade.toggle("Shade the LGM panel by its likelihood", value=True, key="fs_shade",
                                         help="Light: features the LGM model finds likely under some class; dark: "
                                              "unlikely under every class. A poison in the dark is suspicious.")
if space == "2-D":
    method = "raw"
    st.caption("d = 2: the features are drawn exactly as the network computes them.")
else:
    method = st.radio("Map to 2-D with", ["pca", "umap"], horizontal=True, format_func=str.upper,
                      help="PCA is a linear projection: the Gaussian rings are exact. UMAP keeps neighbourhoods "
                           "but bends space, so only the class means are drawn (placed with UMAP's transform).")

cols = st.columns(2)
chosen = {}
for col, head in zip(cols, ("softmax", "lgm")):
    meta = model(pair[head])[1]
    how = {"raw": "as computed", "pca": "PCA map", "umap": "UMAP map"}[method]
    title = f"{head_label(head)} model, {DATASET_NAMES[dataset]} ({space} features, {how})"
    background = likelihood_heatmap(pair[head], method) if shade and head == "lgm" else None
    with col:
        event = st.plotly_chart(space_figure(pair[head], title, method, sigmas=sigmas, background=background),
                                width="stretch", on_select="rerun", selection_mode=("points", "lasso"),
                                key=f"fs_{head}")
        chosen[head] = selected_index(event)
        st.caption(f"test accuracy {100 * meta.get('test_accuracy', float('nan')):.2f}% "
                   f"(full test set), feature dimension {meta['config']['feat_dim']}")

idx = chosen["lgm"] if chosen["lgm"] is not None else chosen["softmax"]
if idx is not None and not 0 <= idx < len(ds.y_test):  # a selection kept from another data set's chart
    idx = None
if idx is None:
    st.info("Click (or lasso) a point in either plot to inspect that image.")
else:
    st.subheader(f"Test image #{idx}")
    c0, *cs = st.columns([1, 2, 2])
    show_image(c0, image_for_display(ds.x_test[idx]), width=120, caption=f"label: {ds.classes[ds.y_test[idx]]}")
    for c, head in zip(cs, ("softmax", "lgm")):
        rep = point_report(model(pair[head])[0], features(pair[head], "test"), ds.y_test, idx)
        pred = rep["pred"]
        c.markdown(f"**{head_label(head)}**: predicts **{ds.classes[pred]}** ({100 * rep['probs'][pred]:.1f}%)")
        if "log_likelihood" in rep:
            c.markdown(f"log-likelihood under its label: **{rep['log_likelihood']:.1f}** (lower than "
                       f"{100 * rep['more_likely_share']:.0f}% "
                       "of test images)", help="How typical this image's features are for the Gaussian of its "
                       "class. Poisons claim a class whose Gaussian they do not sit in, so theirs is low.")
