"""Overview: the attack and the defence in one screen."""

import streamlit as st

from core.attacks import budget_levels, default_eps
from core.report import head_label
from pages.common import demo, example, named, sidebar
from pages.plots import image_for_display, show_image, space_figure
from pages.showcase import draw_showcase, no_showcase

dataset, space, pair = sidebar()
ds = demo(dataset)
st.title("Poison Lab")
st.markdown(
    "**The attack.** A *clean-label poison* is an ordinary, correctly labelled training image (the *base*, "
    "class B) with every pixel changed by at most a small *budget*, so that a person checking the data would "
    "still call it B. The attacker spends that budget pushing the poison's *features* (what the network's "
    "second-to-last layer sees) towards a *target* image of another class T. If the poisons get close "
    "enough, a model retrained on them learns to call the target B.\n\n"
    "**The defence.** A network trained with the Large-Margin Gaussian Mixture (LGM) loss arranges each "
    "class as a Gaussian cloud, so it can ask: *how likely is this training image under the class it "
    "claims?* A poison claims B but was pulled towards T, so it looks unlikely under B.")


st.subheader("Seen in the shipped experiments")
if not draw_showcase(dataset, space):
    st.info(f"{no_showcase(dataset, space)}, so here is one poison crafted now against each model (nothing retrained).")
    cols = st.columns(2)
    for col, head in zip(cols, ("softmax", "lgm")):
        ti, bi, p = example(pair[head], dataset)
        # the poison's start (its base) and end, against the target
        with col:
            st.plotly_chart(space_figure(pair[head], f"{head_label(head)} model ({space})",
                                         poisons=(p.target_feature, p.traj_features[0, :1], p.traj_features[-1, :1])),
                            width="stretch", key=f"ov_{head}")
    ti, bi, p = example(pair["softmax"], dataset)
    c1, c2, c3 = st.columns(3)
    show_image(c1, image_for_display(p.bases[0]), caption=f"base: {named(ds.classes[int(ds.y_train[bi])])}", width=150)
    show_image(c2, image_for_display(p.poisons[0]), width=150, caption="poison (against the softmax model; every pixel "
             f"within {budget_levels(default_eps(dataset))}/255)")
    show_image(c3, image_for_display(p.target[0]), width=150,
               caption=f"target: {named(ds.classes[int(ds.y_test[ti])])}")
st.info("Next: **Guided tour** walks a class through it step by step; **Feature space** to explore the clusters; "
        "**Poison lab** to craft your own poisons and retrain a victim; **Poison gallery**, **Attack outcomes** and "
        "**Defences** for what was measured.")
