"""The classroom's opening example, drawn from the shipped galleries by ``core.gallery.showcase``
(its rule: ``core.gallery.SHOWCASE_RULE``), with the controls that say why (``core.report.control_outcomes``)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.attacks import ATTACKS
from core.data import CLASSES
from core.defences import label as defence_label
from core.defences import own_filter
from core.gallery import SHOWCASE_RULE
from core.report import control_outcomes, head_label
from core.victim import VICTIM_HEADS
from pages.common import DATASET_NAMES, article, experiments_for, galleries, gallery, named
from pages.plots import amplified, image_for_display, show_image, trial_space_figure

SPACE_WORDS = {"2-D": "2-D", "high-d": "high-d"}
OTHER_CLASSES_NOTE = "<br><sup>pretrained on other classes</sup>"  # a second title line: one line was cut off


def no_showcase(dataset: str, space: str | None = None) -> str:
    """Why there is no shipped example to show in the chosen feature space: no experiment at all, none
    whose victim was poisoned, or one only in the other feature space (switch the sidebar)."""
    if not experiments_for(dataset):
        return f"No experiment has been shipped for {DATASET_NAMES[dataset]} yet"
    if space is not None and pick_showcase(dataset, None) is not None:
        other = pick_showcase(dataset, None)[0]
        other_space = experiments_for(dataset)[other]["space"]
        return (f"No shipped {DATASET_NAMES[dataset]} trial with {space} models has poisoned a victim with "
                f"clean-label poisons; the {other_space} models have one (switch the sidebar's feature space to see it)")
    return (f"No shipped {DATASET_NAMES[dataset]} trial has poisoned a victim with clean-label poisons yet "
            "(**Poison gallery** shows what the shipped trials did)")


def pick_showcase(dataset: str, space: str | None):
    """(experiment name, gallery, Showcase) for the data set, from experiments in the sidebar's feature
    ``space`` only (None: any), the strongest by ``Showcase.strength``; None when no shipped trial
    qualifies. The models drawn are then always the sidebar's kind."""
    from core.gallery import showcase

    spaces = {n: r["space"] for n, r in experiments_for(dataset).items()}
    found = [(name, gallery(name), sc) for name in galleries(dataset, space)
             if name in spaces and (space is None or spaces[name] == space)
             for sc in [showcase(gallery(name))] if sc is not None]
    return max(found, key=lambda f: f[2].strength(), default=None)  # ties: the picker's order (default first)


def other_classes(g) -> list[str]:
    """The classes a new-classes gallery's models were trained on: the data set's others."""
    return [c for i, c in enumerate(CLASSES[g.dataset]) if i not in (g.class_ids or ())]


def recipe(spec: dict) -> str:
    """How a victim was retrained, in words: its head's label and any setting that differs."""
    head = VICTIM_HEADS[spec.get("head", "warm")]
    extra = ", weight decay " + str(spec["weight_decay"]) if spec.get("weight_decay") else ""
    return head.label + extra + (", crop + flip" if spec.get("augment") else "")


def control_rows(name: str, trial: dict, classes, config: dict | None = None) -> list[dict] | None:
    """The same poisons against the shipped controls' victims (one row each): a replay's
    (``core.report.control_outcomes``), else the experiment's own further victims (``config``'s
    ``victim`` and ``victims``); None when there is neither."""
    controls = control_outcomes(name, trial)
    if not controls and config and trial.get("controls"):
        own = trial["victims"]["none"]
        controls = {"victim": {**own, "clean_acc_after": own.get("clean_acc_after"),
                               "spec": config.get("victim") or {"head": "warm"}},
                    **{n: {**v, "spec": config.get("victims", {}).get(n, {})} for n, v in trial["controls"].items()}}
    if not controls:
        return None
    return [{"victim retrained on the same poisons": f"{head_label(trial['model_head'])} features: {recipe(v['spec'])}",
             "target now called": classes[v["pred_after"]], "poisoned?": "yes" if v["success"] else "no",
             "clean accuracy": "-" if v.get("clean_acc_after") is None else f"{100 * v['clean_acc_after']:.1f}%"}
            for v in controls.values()]


def draw_showcase(dataset: str, space: str) -> bool:
    """The classroom's opening example: a shipped clean-label poisoning of the softmax victim beside the
    same target and bases crafted against the LGM model, the measured rate, the victim's recipe, the
    controls and what the filter caught. False when none exists in the sidebar's feature space."""
    picked = pick_showcase(dataset, space)
    if picked is None:
        return False
    name, g, sc = picked
    t = g.trials[sc.softmax]
    classes = g.classes
    dims = sorted({m["feat_dim"] for m in g.models.values()})
    victim = recipe(g.config.get("victim") or {"head": "warm"})
    attack = ATTACKS[sc.attack].label.lower() if sc.attack in ATTACKS else sc.attack
    pretrained = ""
    if g.class_ids is not None:
        pretrained = (f" **These are not the sidebar's models:** they were trained on the other classes only "
                      f"({', '.join(other_classes(g))}; `{'`, `'.join(Path(m['path']).name for m in g.models.values())}`), "
                      f"as a victim that reuses a network pretrained elsewhere; the victim learns {', '.join(classes)}. "
                      "Their own Gaussians describe those other classes, so none are drawn.")
    labelled = t.get("labelled")
    judged = (f"{sc.clean_label_successes} with every poison judged clean-label" if not labelled else
              f"the judge accepted {labelled['kept']} of this trial's {labelled['crafted']} poisons as "
              f"{named(classes[t['base_class']])}; the rest were dropped, as a person checking the labels would, "
              "before any victim was retrained")
    st.markdown(f"**A real example, not a staged one.** In the shipped experiment `{name}` (models with "
                f"{'/'.join(map(str, dims))} features) {attack} poisoned the softmax victim in "
                f"**{sc.successes} of {sc.trials} trials** ({judged}). Each victim here was retrained with a "
                f"**{victim}** on clean images plus the poisons. The same target and bases were attacked "
                f"through the LGM model too (right).{pretrained}")
    if sc.attack == "cm":
        st.markdown(f"**Where the poisons go.** The class-mean shift does not put its poisons on the target: it throws "
                    f"them past it, so that the average of all {classes[t['base_class']]}s the victim learns "
                    "from, clean ones included, moves onto the target. In the maps below, look for stars beyond the "
                    "gold diamond, far from their own class: that is also why most filters catch them (deep k-NN, "
                    "which asks a poison's nearest neighbours, catches few).")
    st.caption(SHOWCASE_RULE)
    target, bases, poisons = g.images(sc.softmax)
    cols = st.columns(4)
    show_image(cols[0], image_for_display(target), width=110, caption=f"target: {named(classes[t['target_label']])}")
    show_image(cols[1], image_for_display(bases[0]), width=110, caption=f"base: {named(classes[t['base_class']])}")
    show_image(cols[2], image_for_display(poisons[0]), width=110,
                  caption=f"poison: the {'judge calls' if t.get('labelled') else 'judges call'} it "
                          f"{named(classes[t['base_class']])}")
    show_image(cols[3], image_for_display(amplified(poisons[0], bases[0])), width=110,
                  caption="what changed, amplified (grey: nothing)")
    sides = [("softmax", sc.softmax)] + ([("lgm", sc.lgm)] if sc.lgm is not None else [])
    cols = st.columns(2)
    for col, (head, i) in zip(cols, sides):
        tr = g.trials[i]
        info = g.models[tr["model"]]
        own = tr["victims"].get(own_filter(head))
        threshold = own.get("threshold") if own and own_filter(head) == "lgm" else None
        # high-d: class centres only; the Gaussians' rings, projected, are far wider than the tight
        # clusters and cover one another (Feature space draws them, with that explained). 2-D: the
        # likelihood filter's threshold as each class's ring
        title = f"{head_label(head)} model: poisons crafted against it"
        fig = trial_space_figure(name, i, tr["model"], title + (OTHER_CLASSES_NOTE if g.class_ids else ""),
                                 sigmas=(2,) if info["feat_dim"] == 2 else (),
                                 threshold=threshold if info["feat_dim"] == 2 else None)
        col.plotly_chart(fig, width="stretch", key=f"showcase_{head}")
        none = tr["victims"]["none"]
        called = classes[none["pred_after"]]
        text = (f"Retrained on the poisoned data, the {head_label(head, in_sentence=True)} victim calls the "
                f"target {article(called)} **{called}**: {'**poisoned**' if none['success'] else 'not poisoned'}.")
        if own and own["flagged"] is not None:
            text += (f" Its filter ({defence_label(own_filter(head))}) caught "
                     f"{sum(own['flagged'])} of {len(own['flagged'])} poisons, throwing away {100 * g.config['fpr']:.0f}% "
                     "of clean images.")
        if threshold is not None and info["feat_dim"] == 2:
            text += " Dashed rings: the filter's threshold; a poison outside its claimed class's ring is flagged."
        col.markdown(text)
    rows = control_rows(name, {**t, "model_head": "softmax"}, classes, g.config)
    if rows:
        if (g.config.get("victim") or {"head": "warm"}).get("head") == "warm":
            why = ("These poisons flip a warm-started head refitted without weight decay; a head trained properly "
                   "(the poisoning benchmark's recipe, or weight decay) or a nearest-class-mean rule on the same "
                   "softmax features may not be fooled at all:")
        else:
            why = ("The victim's rule matters as much as its features: the nearest-class-mean and Gaussian rules "
                   "below classify the way the LGM head does, here on the softmax model's features:")
        st.markdown(f"**Why: the same poisons against victims retrained other ways.** {why}")
        st.dataframe(rows, hide_index=True, width="stretch")
    return True
