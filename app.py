"""Poison Lab dashboard: ``streamlit run app.py``.

The sidebar's shared choices live in ``st.session_state`` (set in ``pages/common.sidebar``), so
every page agrees on the dataset and feature space. Pages only arrange widgets over ``core``.
"""

import os

import streamlit as st

from pages.admission import PAGE_RUNS

st.set_page_config(page_title="Poison Lab", page_icon=":test_tube:", layout="wide")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("pages/tour.py", title="Guided tour", icon=":material/school:"),
    st.Page("pages/feature_space.py", title="Feature space", icon=":material/scatter_plot:"),
    st.Page("pages/poison_lab.py", title="Poison lab", icon=":material/science:"),
    st.Page("pages/gallery.py", title="Poison gallery", icon=":material/photo_library:"),
    st.Page("pages/outcomes.py", title="Attack outcomes", icon=":material/bar_chart:"),
    st.Page("pages/defences.py", title="Defences", icon=":material/shield:"),
    st.Page("pages/red_team.py", title="Red-team round", icon=":material/sports_esports:"),
    st.Page("pages/teacher.py", title="Teacher", icon=":material/admin_panel_settings:"),
]
if os.environ.get("POISONLAB_WARM_UP", "1") != "0":  # fill the shared caches once per server (pages/warm.py)
    from pages.warm import start as warm_up

    warm_up()
st.session_state["via_app"] = True  # pages check it: see pages/common.sidebar
with PAGE_RUNS.turn():  # a class that clicks together is served in turn (pages/admission.py)
    st.navigation(PAGES).run()
