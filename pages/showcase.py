"""The classroom's opening example, drawn from the shipped galleries by ``core.gallery.showcase``."""

from __future__ import annotations

import streamlit as st

from core.defences import label as defence_label
from core.defences import own_filter

from core.report import head_label
from pages.common import DATASET_NAMES, article, experiments_for, galleries, gallery, named
from pages.plots import amplified, image_for_display, space_figure


def no_showcase(dataset: str) -> str:
    """Why there is no shipped example to show: no experiment at all, or none whose victim was poisoned."""
    if not experiments_for(dataset):
        return f"No experiment has been shipped for {DATASET_NAMES[dataset]} yet"
    return (f"No shipped {DATASET_NAMES[dataset]} trial has poisoned a victim with clean-label poisons yet "
            "(**Poison gallery** shows what the shipped trials did)")


def pick_showcase(dataset: str, space: str):
    """(experiment name, gallery, Showcase) for the selected data set, preferring an experiment in the
    selected feature space and the ``default`` one; None when no shipped trial qualifies."""
    from core.gallery import showcase

    for name in galleries(dataset, space):
        found = showcase(gallery(name))
        if found is not None:
            return name, gallery(name), found
    return None


def draw_showcase(dataset: str, space: str) -> bool:
    """The classroom's opening example: a shipped clean-label poisoning of the softmax victim beside the
    same target and bases crafted against the LGM model, with the measured rate. False when none exists."""
    picked = pick_showcase(dataset, space)
    if picked is None:
        return False
    name, g, sc = picked
    t = g.trials[sc.softmax]
    classes = g.classes
    dims = sorted({m["feat_dim"] for m in g.models.values()})
    st.markdown(f"**A real example, not a staged one.** In the shipped experiment `{name}` (models with "
                f"{'/'.join(map(str, dims))} features) feature collision poisoned the softmax victim in "
                f"**{sc.successes} of {sc.trials} trials** ({sc.clean_label_successes} with every poison judged "
                f"clean-label). Shown: the first of those by trial number. The same target and bases were attacked "
                f"through the LGM model too (right).")
    target, bases, poisons = g.images(sc.softmax)
    cols = st.columns(4)
    cols[0].image(image_for_display(target), width=110, caption=f"target: {named(classes[t['target_label']])}")
    cols[1].image(image_for_display(bases[0]), width=110, caption=f"base: {named(classes[t['base_class']])}")
    cols[2].image(image_for_display(poisons[0]), width=110,
                  caption=f"poison: the judges call it {named(classes[t['base_class']])}")
    cols[3].image(image_for_display(amplified(poisons[0], bases[0])), width=110,
                  caption="what changed, amplified (grey: nothing)")
    sides = [("softmax", sc.softmax)] + ([("lgm", sc.lgm)] if sc.lgm is not None else [])
    cols = st.columns(2)
    for col, (head, i) in zip(cols, sides):
        tr = g.trials[i]
        info = g.models[tr["model"]]
        # high-d: class centres only; the Gaussians' rings, projected, are far wider than the tight
        # clusters and cover one another (Feature space draws them, with that explained)
        fig = space_figure(info["path"], f"{head_label(head)} model: poisons crafted against it",
                           poisons=g.features(i, tr["model"]), sigmas=(2,) if info["feat_dim"] == 2 else ())
        col.plotly_chart(fig, width="stretch", key=f"showcase_{head}")
        none = tr["victims"]["none"]
        called = classes[none["pred_after"]]
        text = (f"Retrained on the poisoned data, the {head_label(head, in_sentence=True)} victim calls the "
                f"target {article(called)} **{called}**: {'**poisoned**' if none['success'] else 'not poisoned'}.")
        own = tr["victims"].get(own_filter(head))
        if own and own["flagged"] is not None:
            text += (f" Its filter ({defence_label(own_filter(head))}) caught "
                     f"{sum(own['flagged'])} of {len(own['flagged'])} poisons, throwing away {100 * g.config['fpr']:.0f}% of clean images.")
        col.markdown(text)
    return True
