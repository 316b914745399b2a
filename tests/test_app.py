"""The dashboard's entry point renders its default page (Overview) and the dataset switch works."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pages.common import shipped

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.mark.slow
def test_app_renders_and_switches_dataset():
    at = AppTest.from_file(APP, default_timeout=240).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Poison Lab"
    for dataset in shipped():
        at.sidebar.selectbox(key="_w_dataset").select(dataset).run()
        assert not at.exception, [e.value for e in at.exception]
