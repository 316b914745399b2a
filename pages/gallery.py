"""Poison gallery: every shipped trial's poisons, with the judges' and the victims' verdicts. No crafting."""

import streamlit as st

from core.attacks import ATTACKS, budget_levels
from core.defences import label as defence_label
from core.export import contact_sheet, poisons_npz
from core.report import head_label
from pages.common import DATASET_NAMES, article, galleries, gallery, named, sidebar
from pages.plots import show_image, trial_pngs, trial_space_figure

PER_PAGE = 6

dataset, space, pair = sidebar()
st.title("Poison gallery")
st.markdown("Every poison of the shipped experiments, as crafted: no waiting. Each row is one *trial*: a target "
            "test image, a few base training images of another class, and the poisons made from them within the "
            "pixel budget. The *judges* (a separately trained network and the nearest training images, standing "
            "in for a person labelling data) say whether each poison still looks like its base class. Then a "
            "*victim* model is retrained on clean data plus the poisons, without and behind each filter.")

names = galleries(dataset, space)
if not names:
    st.info(f"No shipped experiment with stored poisons for {DATASET_NAMES[dataset]} yet. Choose another data set "
            "in the sidebar, or run one: `poisonlab experiment --config bench/configs/default.json --out DIR`.")
    st.stop()
name = st.selectbox("Experiment", names, key="gallery_experiment",
                    format_func=lambda n: f"{n} ({', '.join(sorted({t['attack'] for t in gallery(n).trials}))})")
g = gallery(name)
if any(t.get("labelled") for t in g.trials):
    first = next(t["labelled"] for t in g.trials if t.get("labelled"))
    st.info(f"A labelled data set: only the poisons of `{first['from']}` that its judge (`{first['judge']}`) calls "
            "their base class are here; the rest were dropped, as a person checking the labels would, before any "
            "victim was retrained.")
if g.class_ids is not None:
    st.caption(f"The models were pretrained on other classes; the victim learns {', '.join(g.classes)}. These are "
               "not the sidebar's models.")

# --- filters ----------------------------------------------------------------------------------------------
c1, c2, c3, c4 = st.columns(4)
attacks = sorted({t["attack"] for t in g.trials})
attack = c1.selectbox("Attack", ["any"] + attacks, key="gallery_attack",
                      format_func=lambda a: "any" if a == "any" else ATTACKS[a].label)
heads = {n: m["head"] for n, m in g.models.items()}
crafted_on = c2.selectbox("Crafted against", ["any"] + list(heads), key="gallery_model",
                          format_func=lambda n: "either model" if n == "any" else f"the {head_label(heads[n])} model")
outcome = c3.selectbox("Victim (no filter)", ["any", "poisoned", "not poisoned"], key="gallery_outcome")
clean = c4.selectbox("Judges", ["any", "every poison clean-label", "some poison not clean-label"],
                     key="gallery_clean")


def keep(t: dict) -> bool:
    hit = t["victims"]["none"]["success"]
    return ((attack == "any" or t["attack"] == attack) and (crafted_on == "any" or t["model"] == crafted_on)
            and (outcome == "any" or hit == (outcome == "poisoned"))
            and (clean == "any" or t["clean_label"] == (clean == "every poison clean-label")))


shown = [i for i, t in enumerate(g.trials) if keep(t)]
n_pages = max(1, -(-len(shown) // PER_PAGE))
st.caption(f"{len(shown)} of {len(g.trials)} trials match. Budget: every pixel within "
           f"{budget_levels(g.trials[0]['eps'] or 0)}/255 of its base.")
if not shown:
    st.stop()
page = st.number_input(f"Page (of {n_pages})", 1, n_pages, 1, key="gallery_page") if n_pages > 1 else 1
classes = g.classes


def victims_line(t: dict) -> str:
    """The unfiltered victim's fate, how many poisons each filter caught, and any filtered victim fooled."""
    none = t["victims"]["none"]
    line = f"Victim without a filter: **{'poisoned' if none['success'] else 'not poisoned'}**."
    caught = [f"{defence_label(d)} {sum(v['flagged'])}" for d, v in t["victims"].items() if v["flagged"] is not None]
    kept = next((len(v["flagged"]) for v in t["victims"].values() if v["flagged"] is not None), t["n_poisons"])
    if t.get("labelled"):  # a labelled data set: the judge's rejects were dropped before anything else
        line += f" The judge kept {t['labelled']['kept']} of the {t['labelled']['crafted']} poisons crafted."
    if caught:
        line += f" Poisons caught (of {kept}): " + " · ".join(caught) + "."
    fooled = [defence_label(d) for d, v in t["victims"].items() if d != "none" and v["success"]]
    if fooled:
        line += " Still poisoned behind: " + ", ".join(fooled) + "."
    return line


for i in shown[(page - 1) * PER_PAGE: page * PER_PAGE]:
    t = g.trials[i]
    pngs = trial_pngs(name, i)
    n_shown = len(pngs["poisons"])
    target_name = classes[t["target_label"]]
    st.markdown(f"**Trial {t['trial']}**: {ATTACKS[t['attack']].label} against the {head_label(heads[t['model']])} "
                f"model; target {article(target_name)} **{target_name}**, poisons claim **{classes[t['base_class']]}**.  \n"
                f"{victims_line(t)}")
    cols = st.columns(2 + 2 * n_shown)
    show_image(cols[0], pngs["target"][0], caption=f"target: {classes[t['target_label']]}", width=84)
    verdict = t["judge"].get("clean_label") or [None] * t["n_poisons"]
    for j in range(n_shown):
        looks = "judges: looks like " + named(classes[t["base_class"]]) if verdict[j] else (
            "judges: NOT clean-label" if verdict[j] is False else "not judged")
        show_image(cols[1 + 2 * j], pngs["bases"][j], caption=f"base {j + 1}", width=84)
        show_image(cols[2 + 2 * j], pngs["poisons"][j], caption=f"poison {j + 1}: {looks}", width=84)
    show_image(cols[-1], pngs["change"][0], width=84, caption="poison 1 minus base 1, amplified")
    st.divider()

# --- one trial in both feature spaces ----------------------------------------------------------------------
st.subheader("Where one trial's poisons land")
pick = st.selectbox("Trial", shown[(page - 1) * PER_PAGE: page * PER_PAGE], key="gallery_pick",
                    format_func=lambda i: f"trial {g.trials[i]['trial']}, {ATTACKS[g.trials[i]['attack']].label}, "
                                          f"against {head_label(heads[g.trials[i]['model']])}")
t = g.trials[pick]
p_target, p_bases, p_poisons = g.images(pick)
d1, d2, _ = st.columns([1, 1, 2])
# downloads are made when clicked (a callable), not on every run of the page
d1.download_button("Poisons as a PNG sheet", lambda: contact_sheet(p_target, p_bases, p_poisons), key="gallery_png",
                   file_name=f"{name}_{t['key']}.png", mime="image/png")
d2.download_button("Poisons as .npz (8-bit images)", key="gallery_npz", file_name=f"{name}_{t['key']}.npz",
                   data=lambda: poisons_npz(p_target, p_bases, p_poisons, target_label=t["target_label"],
                                            base_class=t["base_class"], eps=t["eps"] or 0.0),
                   mime="application/octet-stream")
cols = st.columns(len(g.models))
for col, (model_name, info) in zip(cols, g.models.items()):
    own = " (the model attacked)" if model_name == t["model"] else " (not attacked: poisons transfer or not)"
    fig = trial_space_figure(name, pick, model_name, f"{head_label(info['head'])} model's features{own}")
    col.plotly_chart(fig, width="stretch", key=f"gallery_fig_{model_name}")
st.caption("Each dot is an embedded test image of the data set. Dotted lines join each base (white circle) to its "
           "poison (black star); the gold diamond is the target. A poison that sits on the target while claiming "
           "the base class is what the likelihood filter looks for. The camera icon above a chart saves it as a PNG." +
           (" High-d features are drawn with PCA, a flat projection: points close here may be far apart in all "
            "64+ dimensions." if space != "2-D" or any(m["feat_dim"] > 2 for m in g.models.values()) else ""))
