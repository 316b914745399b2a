"""The dashboard renders with AppTest, for each dataset choice, with no exception."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def test_app_renders_and_switches_dataset():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Poison Lab"
    at.selectbox[0].select("cifar10").run()
    assert not at.exception
