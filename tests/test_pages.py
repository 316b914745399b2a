"""Every dashboard page renders with AppTest for every dataset and feature space; the main click paths run."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pages.common import shipped

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ["pages/overview.py", "pages/feature_space.py", "pages/poison_lab.py", "pages/outcomes.py",
         "pages/defences.py"]
CHOICES = [(d, s) for d, spaces in shipped().items() for s in spaces]


def _app(page: str, dataset: str, space: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=240)
    at.session_state["dataset"] = dataset
    at.session_state["space"] = space
    at.switch_page(page)
    return at.run()


def test_shipped_pairs_exist():
    assert ("mnist", "2-D") in CHOICES and ("mnist", "high-d") in CHOICES


@pytest.mark.parametrize("dataset,space", CHOICES)
@pytest.mark.parametrize("page", PAGES)
def test_page_renders(page, dataset, space):
    at = _app(page, dataset, space)
    assert not at.exception, [e.value for e in at.exception]
    assert at.title, page


def test_feature_space_click_shows_image():
    at = _app("pages/feature_space.py", "mnist", "high-d")
    at.session_state["fs_lgm"] = {"selection": {"points": [], "point_indices": [7], "box": [], "lasso": []}}
    at.run()
    assert not at.exception
    assert any("Test image #7" in s.value for s in at.subheader)
    assert any("log-likelihood" in m.value for m in at.markdown)


def test_poison_lab_flow():
    at = _app("pages/poison_lab.py", "mnist", "high-d")
    at.slider[0].set_value(2)  # poisons
    at.slider[1].set_value(20)  # iterations
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    verdict = at.dataframe[0].value
    assert list(verdict["victim"]) == ["softmax", "lgm", "lgm + likelihood filter"]
    assert any("poisons flagged" in c.value for c in at.caption)


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
    assert not at.exception, [e.value for e in at.exception]
    names = set(at.dataframe[1].value["defence"])
    assert "LGM likelihood (the paper)" in names and "deep k-NN" in names


def test_outcomes_live_run():
    at = _app("pages/outcomes.py", "mnist", "high-d")
    at.slider[0].set_value(1)  # trials
    at.slider[1].set_value(1)  # poisons
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    cells = at.dataframe[-1].value
    assert set(cells["defence"]) >= {"none", "lgm", "knn"}
