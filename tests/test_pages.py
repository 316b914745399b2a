"""Every dashboard page renders with AppTest for every dataset and feature space and shows what a user
must see (its title, its charts, the shipped numbers); the main click paths run."""

import json
from functools import cache
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pages.common import DATASET_NAMES, shipped

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["pages/overview.py", "pages/feature_space.py", "pages/poison_lab.py", "pages/gallery.py",
         "pages/outcomes.py", "pages/defences.py"]
CHOICES = [(d, s) for d, spaces in shipped().items() for s in spaces]


def _app(page: str, dataset: str, space: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["dataset"] = dataset
    at.session_state["space"] = space
    at.run()  # through app.py first, as a browser does (pages refuse to run without its navigation)
    at.switch_page(page)
    return at.run()


def _verdict_drawn(at: AppTest) -> bool:
    return any(s.value == "Verdict" for s in at.subheader) and bool(at.table)


def _until_done(at: AppTest, seconds: float = 300, drawn=lambda at: bool(at.dataframe)) -> AppTest:
    """Rerun until the session's queued job has finished and ``drawn(at)`` says its result is shown (a
    browser's page polls once a second; AppTest does not run fragments on a timer)."""
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        at.run()
        if at.exception or drawn(at) or any("failed" in e.value for e in at.error):
            return at
        time.sleep(0.5)
    raise AssertionError("the queued job did not finish")


@pytest.fixture(autouse=True)
def _no_job_left_behind():
    """Every AppTest shares one session id and the server's queue: a test must not leave a job running
    for the next one (the queue allows one unfinished job per session)."""
    yield
    from pages.jobs_ui import job_queue, session_id

    q = job_queue()
    job = q.current(session_id())
    if job is not None:
        q.cancel(job)
        q.wait(job, timeout=300)


def test_shipped_pairs_exist():
    assert {("mnist", "2-D"), ("mnist", "high-d"), ("fashion-mnist", "2-D"), ("fashion-mnist", "high-d")} <= set(CHOICES)


def _figures(at: AppTest) -> list[dict]:
    """The page's Plotly charts as the browser gets them (figure JSON)."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def _title(fig: dict) -> str:
    return fig["layout"].get("title", {}).get("text", "")


def _chart_text(figs: list[dict]) -> list[str]:
    """Every label printed on the charts (bar and text-trace labels)."""
    out = []
    for fig in figs:
        for trace in fig["data"]:
            text = trace.get("text")
            out += [text] if isinstance(text, str) else list(text or [])
    return out


def _words(at: AppTest) -> str:
    return " ".join(e.value for kind in (at.markdown, at.caption, at.info, at.subheader) for e in kind)


@cache
def _results() -> dict:
    from core.report import load_results

    return load_results()


@cache
def _has_showcase(dataset: str, space: str) -> bool:
    """Whether some shipped trial on ``dataset`` with models of the sidebar's ``space`` poisoned the
    softmax victim with clean-label poisons (the showcase never draws models of the other space)."""
    from core.gallery import load_gallery, shipped_galleries, showcase

    galleries = (load_gallery(p) for p in shipped_galleries().values())
    return any(showcase(g) is not None for g in galleries if g.dataset == dataset
               and all(m["feat_dim"] == 2 for m in g.models.values()) == (space == "2-D"))


def _shows_feature_spaces(figs: list[dict], titles: list[str]) -> None:
    """One scatter of the test sample per model, titled as expected; the LGM one with its class centres."""
    assert [_title(f) for f in figs] == titles
    for fig in figs:
        names = [t.get("name") for t in fig["data"]]
        assert "samples" in names
        # an LGM model pretrained on other classes: its own Gaussians describe those, so none are drawn
        lgm_centres = _title(fig).startswith("LGM") and "pretrained on other classes" not in _title(fig)
        assert ("class centre (LGM)" in names) == lgm_centres


SHOWCASE_TITLES = ["Softmax model: poisons crafted against it", "LGM model: poisons crafted against it"]


def _showcase_titles(name: str) -> list[str]:
    """The showcase's figure titles for shipped experiment ``name`` (models pretrained on other classes say so)."""
    from core.gallery import load_gallery, shipped_galleries

    other = load_gallery(shipped_galleries()[name]).class_ids is not None
    from pages.showcase import OTHER_CLASSES_NOTE

    return [t + (OTHER_CLASSES_NOTE if other else "") for t in SHOWCASE_TITLES]


def _check_overview(at, figs, dataset, space):
    if _has_showcase(dataset, space):
        from core.gallery import load_gallery, shipped_galleries, showcase

        text = _words(at)
        name = text.split("In the shipped experiment `")[1].split("`")[0]
        attack = showcase(load_gallery(shipped_galleries()[name])).attack
        from core.report import primary_cells

        cells = [c for c in primary_cells(_results()[name]) if (c["model"], c["attack"], c["defence"], c["setting"])
                 == ("softmax", attack, "none", "transfer")]
        # the measured rate of the experiment's own victim, as results.json has it
        assert f"in **{sum(c['successes'] for c in cells)} of {sum(c['trials'] for c in cells)} trials**" in text
        _shows_feature_spaces(figs, _showcase_titles(name))
        if load_gallery(shipped_galleries()[name]).class_ids is not None:  # not the sidebar's models: said
            assert "These are not the sidebar's models" in text
    else:
        assert any("one poison crafted now against each model" in i.value for i in at.info)
        _shows_feature_spaces(figs, [f"Softmax model ({space})", f"LGM model ({space})"])
    assert all("poisons" in [t.get("name") for t in f["data"]] for f in figs)  # the example's markers are drawn


def _check_feature_space(at, figs, dataset, space):
    from core.checkpoints import read_meta

    how = "as computed" if space == "2-D" else "PCA map"
    _shows_feature_spaces(figs, [f"{head} model, {DATASET_NAMES[dataset]} ({space} features, {how})"
                                 for head in ("Softmax", "LGM")])
    pair = shipped()[dataset][space]
    for head in ("softmax", "lgm"):
        accuracy = f"test accuracy {100 * read_meta(pair[head])['test_accuracy']:.2f}%"
        assert any(c.value.startswith(accuracy) for c in at.caption), accuracy


def _check_poison_lab(at, figs, dataset, space):
    assert [h.value for h in at.subheader] == ["Until you craft: a shipped example"]
    if _has_showcase(dataset, space):
        text = _words(at)
        assert "A real example, not a staged one" in text
        _shows_feature_spaces(figs, _showcase_titles(text.split("In the shipped experiment `")[1].split("`")[0]))
    else:
        assert not figs and any("craft your own above" in i.value for i in at.info)


def _check_gallery(at, figs, dataset, space):
    from core.gallery import load_gallery, shipped_galleries

    g = load_gallery(shipped_galleries()[at.selectbox(key="gallery_experiment").value])
    assert any(c.value.startswith(f"{len(g.trials)} of {len(g.trials)} trials match") for c in at.caption)
    assert f"**Trial {g.trials[0]['trial']}**" in _words(at)
    assert len(figs) == len(g.models)
    for fig in figs:
        assert _title(fig).split(" model's features")[0] in ("Softmax", "LGM")
        assert {"samples", "target", "base images", "poisons"} <= {t.get("name") for t in fig["data"]}


def _check_outcomes(at, figs, dataset, space):
    from core.report import fmt_rate, load_bench

    name = at.selectbox(key="experiment").value
    res = _results()[name]
    cells = res["cells"]
    table = at.dataframe[0].value
    assert list(table["target flipped (95% CI)"]) == [fmt_rate(c["rate"], c["ci95"]) for c in cells]
    ran = sum(c["trials"] for c in cells if c["defence"] == "none")
    assert any(c.value.startswith(f"{ran} trials; {res['config']['iters']} crafting iterations") for c in at.caption)
    combos = {(c["attack"], c["setting"]) for c in cells}
    stem = dataset.replace("-", "_")
    benches = sum(load_bench(f"{kind}_{stem}") is not None for kind in ("budget", "dose"))
    assert len(figs) == 2 * len(combos) + benches
    shown = _chart_text(figs)
    for c in cells:  # every cell's count and every filter's catch, as results.json has them
        assert f"{c['successes']} of {c['trials']}" in shown, c
        if c["defence"] != "none":
            assert f"{100 * c['poisons_flagged']:.0f}% (AUC {c['auc']:.2f})" in shown, c


def _check_defences(at, figs, dataset, space):
    caption = " ".join(c.value for c in at.caption)
    name = caption.split("Shipped experiment `")[1].split("`")[0]
    caught = {f"{100 * c['poisons_flagged']:.0f}% (AUC {c['auc']:.2f})" for c in _results()[name]["cells"]
              if c["defence"] != "none"}
    assert _title(figs[0]).endswith("of clean images thrown away")
    assert _chart_text(figs[:1]) and set(_chart_text(figs[:1])) <= caught
    from core.report import load_ladders, experiment_models

    ladders = [l for l in load_ladders().values() if {c["dataset"] for c in experiment_models(l)} == {dataset}]
    # then one adaptive-ladder chart per model of the first shipped ladder for this data set
    assert len(figs) == 1 + (len({r["model"] for r in ladders[0]["rows"]}) if ladders else 0)
    for fig in figs[1:]:
        assert _title(fig).endswith("model") and fig["layout"]["yaxis"]["title"]["text"] == "share of targets flipped behind it"


PAGE_CHECKS = {"pages/overview.py": ("Poison Lab", _check_overview),
               "pages/feature_space.py": ("Feature space", _check_feature_space),
               "pages/poison_lab.py": ("Poison lab", _check_poison_lab),
               "pages/gallery.py": ("Poison gallery", _check_gallery),
               "pages/outcomes.py": ("Attack outcomes", _check_outcomes),
               "pages/defences.py": ("Defences", _check_defences)}


@pytest.mark.parametrize("dataset,space", CHOICES)
@pytest.mark.parametrize("page", PAGES)
def test_page_renders(page, dataset, space):
    """The page's title, no error, and what it must show: its charts and the shipped numbers."""
    at = _app(page, dataset, space)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    title, check = PAGE_CHECKS[page]
    assert [t.value for t in at.title] == [title]
    check(at, _figures(at), dataset, space)


def test_feature_space_click_shows_image():
    at = _app("pages/feature_space.py", "mnist", "high-d")
    at.session_state["fs_lgm"] = {"selection": {"points": [], "point_indices": [7], "box": [], "lasso": []}}
    at.run()
    assert not at.exception
    assert any("Test image #7" in s.value for s in at.subheader)
    assert any("log-likelihood" in m.value for m in at.markdown)


@pytest.mark.slow
def test_poison_lab_flow_matches_core():
    """The verdict table shows what core computes for the same choices and seed, victim by victim."""
    import numpy as np

    from core.attacks import settings_for
    from core.checkpoints import load_checkpoint
    from core.data import load_demo
    from core.judge import load_judge
    from core.lab import run_lab
    from core.pipeline import correct_targets, plan_trial

    at = _app("pages/poison_lab.py", "mnist", "high-d")
    at.selectbox[0].set_value(0).run()  # target class 0, the first of them (the lab may open elsewhere)
    at.number_input[0].set_value(0).run()
    next(s for s in at.selectbox if s.label.startswith("Base class")).set_value(1)
    next(s for s in at.selectbox if s.label == "Attack").set_value("fc")
    at.slider[0].set_value(2)  # poisons
    at.slider[1].set_value(20)  # crafting steps
    at.button[0].click().run()
    _until_done(at, drawn=_verdict_drawn)
    assert not at.exception, [e.value for e in at.exception]
    table = at.table[0].value
    shown = dict(zip(table["victim (retrained on the poisoned data)"], table["poisoned?"]))
    assert list(shown) == ["Softmax", "Softmax + Distance to class centre", "LGM", "LGM + LGM likelihood (the paper)"]

    ds = load_demo("mnist")
    pair = shipped()["mnist"]["high-d"]
    models = {h: load_checkpoint(pair[h])[0] for h in ("softmax", "lgm")}
    targets = correct_targets(list(models.values()), ds)
    ti = int(np.intersect1d(np.flatnonzero(ds.y_test == 0), targets)[0])  # the page's first target
    judge = load_judge(ds)
    plan = plan_trial(ds, 0, targets, n_poisons=2, n_clean=500, n_test=500, target_index=ti, base_class=1,
                      judge=judge)
    for head, name in (("softmax", "Softmax"), ("lgm", "LGM")):
        r = run_lab(models[head], ds, plan, "fc", settings_for("fc", "mnist", iters=20, seed=0, record_every=1), judge=judge)
        own = "Distance to class centre" if head == "softmax" else "LGM likelihood (the paper)"
        assert shown[name] == ("yes" if r.victims["none"].success else "no")
        assert shown[f"{name} + {own}"] == ("yes" if r.victims[list(r.victims)[1]].success else "no")
    assert any("poisons flagged" in c.value for c in at.caption)
    assert any("judged clean-label" in c.value for c in at.caption)
    # one model's details at a time, the softmax model's first; the other tab draws only once opened
    models_shown = lambda: [h.value.split(":")[0] for h in at.subheader if h.value.endswith(" s")]  # noqa: E731
    assert models_shown() == ["Softmax model"]
    at.session_state["lab_model_tab"] = "LGM model"
    at.run()
    assert not at.exception and models_shown() == ["LGM model"]
    assert any("poisons flagged" in c.value for c in at.caption)
    assert len(at.table) == 1 and at.table[0].value.equals(table)  # the verdict stays as it was


@pytest.mark.slow
def test_poison_lab_drops_a_result_made_for_other_choices():
    at = _app("pages/poison_lab.py", "mnist", "high-d")
    at.slider[0].set_value(1)
    at.slider[1].set_value(10)
    at.button[0].click().run()
    _until_done(at, drawn=_verdict_drawn)
    assert len(at.table) == 1
    at.session_state["space"] = "2-D"  # the sidebar changes: the old verdict must not be drawn on the new map
    at.run()
    assert not at.exception and len(at.table) == 0 and not any(s.value == "Verdict" for s in at.subheader)


def test_poison_lab_first_view_shows_the_shipped_example():
    at = _app("pages/poison_lab.py", "mnist", "high-d")
    assert not at.exception
    assert [h.value for h in at.subheader] == ["Until you craft: a shipped example"]
    assert any("A real example, not a staged one" in m.value for m in at.markdown)
    assert len(at.get("plotly_chart")) == 2  # the showcase's two feature spaces


@pytest.mark.slow
def test_poison_lab_opens_on_the_measured_press_and_it_teaches():
    """The lab's first press, at its defaults, is the shipped measured one (core.lab.lab_default), the
    page says why, and pressing it shows what was measured: softmax victim fooled, LGM victim not."""
    from core.lab import lab_default

    d = lab_default("mnist", "2-D")
    assert d is not None
    at = _app("pages/poison_lab.py", "mnist", "2-D")
    assert not at.exception
    from core.data import load_demo

    assert at.selectbox[0].label == "Target class" and at.selectbox[0].value == int(load_demo("mnist").y_test[d.target_index])
    assert any("The lab opens on this" in c.value for c in at.caption)
    assert any(s.label.startswith("Base class") and s.value == d.base_class for s in at.selectbox)
    assert at.slider[0].value == d.n_poisons and at.slider[1].value == d.iters
    at.slider[0].set_value(d.n_poisons - 1).run()  # no longer the measured press: the page stops claiming it
    assert not any("The lab opens on this" in c.value for c in at.caption)
    at.slider[0].set_value(d.n_poisons).run()
    assert any("The lab opens on this" in c.value for c in at.caption)
    at.button[0].click().run()
    _until_done(at, drawn=_verdict_drawn)
    assert not at.exception, [e.value for e in at.exception]
    table = at.table[0].value
    shown = dict(zip(table["victim (retrained on the poisoned data)"], table["poisoned?"]))
    assert shown["Softmax"] == "yes" and shown["LGM"] == "no"
    called = dict(zip(table["victim (retrained on the poisoned data)"], table["target now called"]))
    ds = load_demo("mnist")
    assert called["LGM"] == ds.classes[int(ds.y_test[d.target_index])]  # not fooled: still its own class
    assert called["Softmax"] == ds.classes[d.base_class]


def test_poison_lab_other_target_modes():
    """AppTest cannot upload files (core/uploads.py's tests cover bad uploads); the modes must render."""
    at = _app("pages/poison_lab.py", "mnist", "2-D")
    at.radio(key="target_how").set_value("upload an image").run()
    assert not at.exception
    at.radio(key="target_how").set_value("click it in the scatter").run()
    assert not at.exception and any("Choose a target" in i.value for i in at.info)
    at.session_state["lab_pick"] = {"selection": {"points": [], "point_indices": [4], "box": [], "lasso": []}}
    at.run()
    assert not at.exception and any("Base class" in s.label for s in at.selectbox)


def test_defences_compare_flow():
    at = _app("pages/defences.py", "mnist", "high-d")
    at.slider[0].set_value(1)  # pairs
    at.slider[1].set_value(20)  # iterations
    at.button[0].click().run()
    _until_done(at)
    assert not at.exception, [e.value for e in at.exception]
    names = set(at.dataframe[1].value["defence"])
    assert "LGM likelihood (the paper)" in names and "Deep k-NN" in names
    chi2 = [c.value for c in at.caption if c.value.startswith("Chi-square threshold")]
    assert len(chi2) == 2 and "nominal 1%" in chi2[0]  # the shipped LGM models use identity covariance


def test_outcomes_every_shipped_experiment_renders():
    at = _app("pages/outcomes.py", "mnist", "high-d")
    names = at.selectbox(key="experiment").options
    assert "default" in [n.split(":")[0] for n in names]
    for option in names:
        name = option.split(":")[0]
        at.selectbox(key="experiment").set_value(name).run()
        assert not at.exception, [e.value for e in at.exception]
        from core.report import reproduce_command

        assert any(reproduce_command(name, _results()[name]) in c.value for c in at.caption)
        assert name.endswith("_labelled") == any("A labelled data set" in i.value for i in at.info), name
        assert len(at.dataframe) == 1 and len(at.dataframe[0].value) > 0
        unconstrained = any("Unconstrained (not clean-label)" in w.value for w in at.warning)
        assert unconstrained == (name == "end2end_unconstrained"), name  # the sanity run says it is one


@pytest.mark.parametrize("space, first", [("high-d", "cifar10"), ("2-D", "cifar10_d2")])
def test_outcomes_and_gallery_open_on_the_experiment_in_the_chosen_space(space, first):
    at = _app("pages/outcomes.py", "cifar10", space)
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="experiment").value == first
    at = _app("pages/gallery.py", "cifar10", space)
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="gallery_experiment").value == first


@pytest.mark.slow
def test_outcomes_live_run():
    at = _app("pages/outcomes.py", "mnist", "high-d")
    at.slider[0].set_value(1)  # trials
    at.slider[1].set_value(1)  # poisons
    shipped_tables = len(at.dataframe)
    at.button[0].click().run()
    _until_done(at, drawn=lambda at: len(at.dataframe) > shipped_tables)
    assert not at.exception, [e.value for e in at.exception]
    cells = at.dataframe[-1].value
    assert all(v.endswith(" of 1") for v in cells["flipped with clean-label poisons"])  # the live run's own table
    assert set(cells["filter"]) >= {"no filter", "LGM likelihood (the paper)", "Deep k-NN"}


@pytest.mark.slow
def test_broken_checkpoint_is_skipped_with_a_message(tmp_path, monkeypatch, mnist_demo):
    """A truncated checkpoint is named in the sidebar; the app keeps running on the others."""
    import streamlit as st
    import torch

    import core.checkpoints as ck
    from core.models import Classifier, default_config

    for head in ("softmax", "lgm"):
        for d in (2, 16):
            torch.manual_seed(0)
            ck.save_checkpoint(Classifier(default_config("mnist", head, d, arch="resnet", width=16)),
                               tmp_path / f"mnist_{head}_d{d}.pt", {})
    broken = tmp_path / "mnist_lgm_d16.pt"
    broken.write_bytes(broken.read_bytes()[:1000])
    monkeypatch.setattr(ck, "CHECKPOINT_DIR", tmp_path)
    st.cache_data.clear()
    try:
        at = _app("pages/overview.py", "mnist", "2-D")
        assert not at.exception
        assert any("mnist_lgm_d16.pt" in w.value and "sha256" in w.value for w in at.sidebar.warning)
        assert at.sidebar.radio(key="_w_space").options == ["2-D"]
    finally:
        st.cache_data.clear()


@pytest.mark.slow
def test_gallery_filters_match_core():
    from core.gallery import load_gallery, shipped_galleries

    g = load_gallery(shipped_galleries()["default"])
    at = _app("pages/gallery.py", "mnist", "high-d")
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="gallery_outcome").set_value("poisoned").run()
    hits = [t for t in g.trials if t["victims"]["none"]["success"]]
    assert any(c.value.startswith(f"{len(hits)} of {len(g.trials)} trials match") for c in at.caption)
    assert all(f"Trial {t['trial']}" in "".join(m.value for m in at.markdown) for t in hits[:6])
    at.selectbox(key="gallery_clean").set_value("some poison not clean-label").run()
    n = sum(not t["clean_label"] for t in hits)
    assert any(c.value.startswith(f"{n} of {len(g.trials)} trials match") for c in at.caption)
    assert not at.exception


def test_overview_showcase_states_the_measured_rate():
    from core.report import load_results

    cell = next(c for c in load_results()["default"]["cells"]
                if (c["model"], c["attack"], c["defence"]) == ("softmax", "fc", "none"))
    at = _app("pages/overview.py", "mnist", "high-d")
    text = "".join(m.value for m in at.markdown)
    assert f"in **{cell['successes']} of {cell['trials']} trials**" in text
    assert "poisoned" in text and not at.exception
    captions = [i.caption for img in at.get("image") for i in img.proto.imgs]
    assert any(c.startswith("target: an 8") for c in captions), captions  # the shipped trial: an 8, not "a 8"


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_defences_opens_on_what_the_shipped_filters_caught(dataset):
    """Before anyone presses the button the page shows a measured result, not an empty page."""
    at = _app("pages/defences.py", dataset, "high-d")
    assert not at.exception
    assert len(at.get("plotly_chart")) >= 1  # what the filters caught (then any shipped ladder's curves)
    assert "Against an attacker who knows the filter" in [h.value for h in at.subheader]
    caption = " ".join(c.value for c in at.caption)
    assert f"Shipped experiment `{'default' if dataset == 'mnist' else 'cifar10'}`" in caption


def test_tour_words_about_exact_copies_follow_the_data():
    from core.report import copies_needed

    rows = [{"victim": v, "count": c, "rate": r} for v, c, r in
            [("lgm", 1, 0), ("lgm", 100, 0), ("lgm", 200, 1), ("softmax", 1, 1), ("softmax", 5, 1),
             ("softmax, weight decay 0.01", 1, 0), ("softmax, weight decay 0.01", 5, 0.2),
             ("softmax, weight decay 0.01", 50, 1), ("x", 1, 0), ("x", 9, 0)]]
    assert copies_needed(rows) == ("LGM head: every target flipped at 200 copies; Softmax head: every target "
                                   "flipped at 1 copy; Softmax head, weight decay 0.01: the first target at 5, "
                                   "all at 50; x: none flipped with up to 9 copies.")


def test_class_names_take_the_article_they_are_read_with():
    from pages.common import named

    assert [named(n) for n in ("8", "7", "11", "18", "80", "1", "airplane", "truck", "ankle boot")] == [
        "an 8", "a 7", "an 11", "an 18", "an 80", "a 1", "an airplane", "a truck", "an ankle boot"]


def test_click_reads_the_sample_index_not_the_trace_position():
    """Under a background heat-map the samples are trace 1: the clicked sample comes from its customdata."""
    from pages.plots import selected_index

    event = {"selection": {"points": [{"curve_number": 1, "point_index": 3, "customdata": [42, 7]}],
                           "point_indices": [3]}}
    assert selected_index(event) == 42
    assert selected_index({"selection": {"points": [], "point_indices": [5]}}) == 5
    assert selected_index(None) is None


def test_every_tour_step_renders_and_explains_its_terms():
    """Seven steps; the last three ask the class to predict, and show the shipped result only after Reveal
    (saying whether the prediction was right)."""
    at = _app("pages/tour.py", "mnist", "high-d")
    assert [t.value for t in at.title] == ["Guided tour"]
    seen, text, charts = [], "", []
    for i in range(7):
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        seen.append(at.subheader[0].value)
        if i >= 4:  # predict, then reveal
            assert any("Predict first" in m.value for m in at.markdown) and not _figures(at)
            guess = next(r for r in at.radio if r.key.startswith("_predict_"))
            guess.set_value(guess.options[0]).run()
            next(b for b in at.button if b.label == "Reveal the result").click().run()
            assert any(m.value.startswith("You predicted: ") for m in (*at.success, *at.warning))
        charts.append([_title(f) for f in _figures(at)])
        text += " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
        if len(seen) < 7:
            at.button(key="tour_next").click().run()
    assert len(set(seen)) == 7 and at.button(key="tour_next").disabled
    assert charts[0] == ["Softmax network", "LGM network"]  # the two feature spaces
    assert charts[3] == ["Softmax network: poisons crafted against it"]
    assert all(charts[i] for i in (4, 5, 6)), charts  # the budget curve, the alarm, the exact-copies curve
    for term in ("**features**", "**budget**", "**clean-label**", "**victim**", "**false-positive", "**AUC**",
                 "**transfer**", "warm-started head"):
        assert term in text, term
    at.button(key="tour_back").click().run()
    assert at.subheader[0].value == seen[5]


def test_tour_ends_on_the_shipped_ladder_where_the_data_set_has_one(monkeypatch):
    """CIFAR-10 ships an adaptive ladder: an eighth step asks whether an attacker who knows the filters
    fools the LGM victim behind its filter more often, then draws the LGM network's ladder and says what
    it measured. MNIST has none: seven steps (the test above)."""
    import pages.common as common

    rows = [r for r in _ladder_rows() if r["model"] == "lgm"]
    rival = {**rows[1], "stealth": "centroid", "weight": 0.1, "flagged": {"share": 0.04, "ci95": [0, 1]},
             "success_filtered": {"successes": 5, "rate": 5 / 6, "ci95": [0, 1]},
             "vs_static": {"pairs": 6, "adaptive": 5, "static": 0, "only_adaptive": 5, "only_static": 0, "p": 0.0625}}
    models = {"config": {"models": {"softmax": "checkpoints/newclasses/cifar10_split0_softmax_d128.pt",
                                    "lgm": "checkpoints/newclasses/cifar10_split0_lgm_d128.pt"}}}
    ladder = {"attack": "cm", "rows": rows, "others": [rival], **models}
    # a fuller ladder that never measured the LGM filter (softmax rows only) must not be the one opened
    fuller = {"attack": "cm", "rows": [{**r, "trials": 60} for r in _ladder_rows() if r["model"] == "softmax"], **models}
    monkeypatch.setattr(common, "load_ladders", lambda: {"test_ladder": ladder, "z_fuller": fuller})
    common.ladders_for.clear()
    try:
        at = _app("pages/tour.py", "cifar10", "high-d")
        assert not at.exception and at.progress[0].proto.text.endswith("of 8")
        at.session_state["tour_step"] = 7
        at.run()
        assert at.subheader[0].value == "An attacker who knows the filter" and not _figures(at)
        guess = next(r for r in at.radio if r.key.startswith("_predict_"))
        assert guess.options == ["yes, clearly more", "no, not clearly more"]
        guess.set_value("yes, clearly more").run()
        next(b for b in at.button if b.label == "Reveal the result").click().run()
        # 5 of 6 against none, but p = 0.06: not clearly more, and the page says so
        assert not at.exception and any("no, not clearly more" in m.value for m in (*at.success, *at.warning))
        figs = _figures(at)
        assert [_title(f) for f in figs] == ["LGM network: its filter against an attacker who knows it"]
        assert [t["name"] for t in figs[0]["data"]] == ["LGM likelihood (the paper)", "LGM likelihood (the paper), "
                                                        "attack aimed at Distance to class centre"]  # its curve, its rival
        text = " ".join(m.value for m in at.markdown)
        assert "Measured on 6 targets, 25 poisons each" in text
        assert "the static attack flips 4 of 6 targets with no filter" in text and "flips 5 of 6 behind this filter" in text
        captions = " ".join(c.value for c in at.caption)
        assert "exact McNemar p = 0.062" in text and "unlikely to be luck" in captions
        assert "not the sidebar's: cifar10_split0_softmax_d128.pt, cifar10_split0_lgm_d128.pt." in captions
        assert at.button(key="tour_next").disabled
        # with a significant gain the answer is "yes"
        rival["vs_static"].update(pairs=12, only_adaptive=9, p=0.004)
        common.ladders_for.clear()
        at = _app("pages/tour.py", "cifar10", "high-d")
        at.session_state["tour_step"] = 7
        at.run()
        next(r for r in at.radio if r.key.startswith("_predict_")).set_value("yes, clearly more").run()
        next(b for b in at.button if b.label == "Reveal the result").click().run()
        assert any("yes, clearly more" in m.value for m in at.success)
    finally:
        common.ladders_for.clear()


def test_tour_never_draws_models_the_sidebar_does_not_name():
    """MNIST 2-D has no clean-label poisoning shipped: the tour says so and offers to switch the sidebar
    to models that have one, instead of drawing them under a 2-D sidebar."""
    at = _app("pages/tour.py", "mnist", "2-D")
    assert not at.exception and not _figures(at)
    switch = next(b for b in at.button if b.label.startswith("Switch the sidebar to"))
    switch.click().run()
    assert at.session_state["space"] == "high-d" and at.subheader[0].value == "Two networks, one job"
    assert at.sidebar.radio[0].value == "high-d" and len(_figures(at)) == 2


@pytest.mark.slow
def test_a_failing_lab_run_reaches_its_own_session_only(monkeypatch):
    """A job that raises: the session gets the message once, the queue goes on, the next run works.
    (AppTest gives every AppTest the same session id, so isolation between sessions is tested on the
    queue itself in tests/test_jobs.py.)"""
    import core.lab

    def broken(*args, **kwargs):
        raise RuntimeError("simulated crash inside the crafting job")

    monkeypatch.setattr(core.lab, "run_lab_pair", broken)
    at = _app("pages/poison_lab.py", "mnist", "high-d")
    at.slider[0].set_value(1)
    at.button[0].click().run()
    # wait for the crash itself: the page shows a shipped example (a table) before any result
    _until_done(at, drawn=lambda at: any("simulated crash" in e.value for e in at.error))
    assert any("simulated crash" in e.value for e in at.error) and not at.exception
    at.run()
    assert not at.error  # shown once, then forgotten: memory stays bounded
    monkeypatch.undo()
    at.slider[1].set_value(10)
    at.button[0].click().run()
    _until_done(at, drawn=lambda at: any(s.value == "Verdict" for s in at.subheader))
    assert not at.exception and any(s.value == "Verdict" for s in at.subheader)  # the queue is still serving


@pytest.mark.slow
def test_hundred_rapid_reruns_of_a_page():
    at = _app("pages/gallery.py", "mnist", "high-d")
    for i in range(100):
        at.selectbox(key="gallery_outcome").set_value(["any", "poisoned", "not poisoned"][i % 3]).run()
        assert not at.exception, (i, [e.value for e in at.exception])


def test_feature_space_ignores_a_selection_from_another_data_set():
    """A point index from MNIST's 1000-point chart must not crash CIFAR-10's 500-point one."""
    at = _app("pages/feature_space.py", "cifar10", "high-d")
    at.session_state["fs_lgm"] = {"selection": {"points": [], "point_indices": [999], "box": [], "lasso": []}}
    at.run()
    assert not at.exception and any("Click (or lasso)" in i.value for i in at.info)


def test_samples_never_cover_the_markers_drawn_over_them():
    """Plotly paints WebGL above SVG: with centres or poison markers the samples must be SVG too."""
    import numpy as np

    from pages.plots import feature_figure, poison_markers

    pts, labels = np.zeros((5, 2)), np.arange(5)
    plain = feature_figure(pts, labels, tuple("abcde"), "t")
    marked = feature_figure(pts, labels, tuple("abcde"), "t",
                            extra=poison_markers(np.zeros(2), np.zeros((1, 2)), np.ones((1, 2))))
    assert plain.data[0].type == "scattergl"  # nothing on top: the fast renderer
    assert marked.data[0].type == "scatter" and all(t.type == "scatter" for t in marked.data[-3:])


def _ladder_rows() -> list[dict]:
    rows = []
    for model, filters in (("lgm", ("lgm", "centroid")), ("softmax", ("centroid",))):
        for defence in filters:
            for w, flagged, wins, free in ((0.0, 0.96, 0, 4), (1.0, 0.5, 1, 3), (10.0, 0.1, 2, 2)):
                rows.append({"model": model, "victim": "linear", "filter": defence, "stealth": "centroid", "weight": w,
                             "trials": 6, "n_poisons": 25, "flagged": {"share": flagged, "ci95": [0, 1]},
                             "clean_flagged": 0.05, "clean_acc_after": 0.5, "clean_label_rate": 0.9,
                             "mean_feature_distance": 1.0,
                             "success_unfiltered": {"successes": free, "rate": free / 6, "ci95": [0, 1]},
                             "success_filtered": {"successes": wins, "rate": wins / 6, "ci95": [0, 1]}})
    return rows


def test_defences_page_draws_a_shipped_ladder_with_what_it_means(monkeypatch):
    """A shipped adaptive ladder: one chart per model, and per filter the sentence a teacher can
    repeat, its numbers from the ladder's rows."""
    import pages.common as common

    rival = {**_ladder_rows()[1], "stealth": "centroid", "weight": 0.1, "flagged": {"share": 0.04, "ci95": [0, 1]},
             "success_filtered": {"successes": 5, "rate": 5 / 6, "ci95": [0, 1]}}  # the LGM filter, centroid rung
    ladder = {"attack": "cm", "rows": _ladder_rows(), "others": [rival], "config": {"models": {
        "softmax": "checkpoints/mnist_softmax_d64.pt", "lgm": "checkpoints/mnist_lgm_d64.pt"}}}
    monkeypatch.setattr(common, "load_ladders", lambda: {"test_ladder": ladder})
    common.ladders_for.clear()
    try:
        at = _app("pages/defences.py", "mnist", "high-d")
    finally:
        common.ladders_for.clear()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 3  # what the filters caught, then one ladder chart per model
    caption = " ".join(c.value for c in at.caption)
    assert ("LGM likelihood (the paper): the static attack flips 4 of 6 targets with no filter; the filter flags "
            "96% of its poisons and 0 of 6 still flip behind it. Knowing the filter, the attacker's best weight "
            "(w = 10) leaves 10% flagged and flips 2 of 6 behind it (2 with no filter). Stronger still: the attack "
            "aimed at Distance to class centre (w = 0.1) leaves 4% flagged here and flips 5 of 6 "
            "behind this filter.") in caption
    assert "Distance to class centre: the static attack" in caption and caption.count("Stronger still") == 1
    assert "Shipped ladder `test_ladder`" in caption
    # two ladders: a choice, opening on the one with the most adaptive trials
    small = {**ladder, "rows": [{**r, "trials": 1} for r in ladder["rows"]]}
    monkeypatch.setattr(common, "load_ladders", lambda: {"a_small": small, "test_ladder": ladder})
    common.ladders_for.clear()
    try:
        at = _app("pages/defences.py", "mnist", "high-d")
        assert at.selectbox(key="ladder_pick").value == "test_ladder"
        at.selectbox(key="ladder_pick").set_value("a_small").run()
        assert not at.exception and "Shipped ladder `a_small`" in " ".join(c.value for c in at.caption)
    finally:
        common.ladders_for.clear()
    at = _app("pages/defences.py", "fashion-mnist", "high-d")
    assert "No adaptive ladder is shipped for Fashion-MNIST" in " ".join(c.value for c in at.caption)


def test_gallery_of_a_labelled_new_classes_experiment_names_the_victims_classes():
    """A new-classes experiment's labels index the victim's five classes: the gallery must name those
    (it once named the full data set's, so a dog showed as a bird), say the models are not the
    sidebar's, and say which poisons a labelled data set kept."""
    from core.gallery import load_gallery, shipped_galleries

    name = "meanshift_newclasses_cifar10_labelled"
    g = load_gallery(shipped_galleries()[name])
    assert g.class_ids == (0, 1, 5, 8, 9) and g.classes == ["airplane", "automobile", "dog", "ship", "truck"]
    at = _app("pages/gallery.py", "cifar10", "high-d")
    at.selectbox(key="gallery_experiment").set_value(name).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("A labelled data set" in i.value for i in at.info)
    assert any("not the sidebar's models" in c.value for c in at.caption)
    text = _words(at)
    first = g.trials[0]
    assert f"poisons claim **{g.classes[first['base_class']]}**" in text
    assert f"The judge kept {first['labelled']['kept']} of the {first['labelled']['crafted']} poisons" in text
    for other in ("bird", "cat", "deer", "frog", "horse"):
        assert f"**{other}**" not in text
    figs = _figures(at)
    assert figs and all("class centre (LGM)" not in [t.get("name") for t in f["data"]] for f in figs)


def test_frozen_figures_convert_once_and_draw_the_same():
    import plotly.graph_objects as go
    import plotly.io as pio

    from pages.figures import frozen

    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name="a"), layout={"title": {"text": "t"}})
    f = frozen(fig)
    assert f.to_dict() is f.to_dict() and f.to_dict() == fig.to_dict()
    assert json.loads(pio.to_json(f.to_dict(), validate=False)) == json.loads(pio.to_json(fig, validate=False))
