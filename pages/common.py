"""What every page shares: cached models, data, features, maps and galleries, and the sidebar's choices.

Models, data, features, maps and results are cached once per server (``st.cache_resource``) and
shared by every browser, read-only by convention: ``core`` never changes them (attacks and victims
work on copies) and no page does. (``st.cache_data`` would hand every call its own unpickled copy:
under a class of thirty, copying the data sample and the features several times per page run cost
more than drawing the page.) Plot helpers are in
``pages/plots.py``, the queue's widgets in ``pages/jobs_ui.py``, the Overview's example in
``pages/showcase.py``.

pandas is imported eagerly: Plotly looks it up in ``sys.modules`` without importing it, so while a
job thread (the queue's) is halfway through importing pandas, a page drawing a chart in another
thread got the half-initialised module ("partially initialized module 'pandas' has no attribute
'Series'").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas  # noqa: F401 - imported before any job thread runs (see the module's docstring)
import streamlit as st

from core.checkpoints import CheckpointError, list_checkpoints, load_checkpoint, verify_checkpoint
from core.data import load_demo
from core.embeddings import fit_projection, map_key, stored_features
from core.gallery import load_gallery, shipped_galleries
from core.judge import default_judge
from core.pipeline import FeatureBank, correct_targets
from core.report import experiment_models, load_ladders, load_results

DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def article(name: str) -> str:
    """"a" or "an" before a class name, as it is read aloud: an 8, an airplane, a 7, a truck."""
    return "an" if re.match(r"[aeiouAEIOU]|8|1[18]\b", str(name)) else "a"


def named(name: str) -> str:
    """A class name with its article: "an 8", "a truck"."""
    return f"{article(name)} {name}"


HEADS = ("softmax", "lgm")


def shipped() -> dict:
    """{dataset: {"2-D": {head: path}, "high-d": {head: path}}} for checkpoints that pass their hash check."""
    return _scan()[0]


def checkpoint_problems() -> list[str]:
    return _scan()[1]


@st.cache_data(show_spinner=False)
def _scan() -> tuple[dict, list[str]]:
    """Hash-check every checkpoint once per server: (usable pairs, why the others were skipped)."""
    found: dict = {}
    problems = []
    for path in list_checkpoints():
        try:
            meta = verify_checkpoint(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        cfg = meta["config"]
        space = "2-D" if cfg["feat_dim"] == 2 else "high-d"
        found.setdefault(cfg["dataset"], {}).setdefault(space, {})[cfg["head"]] = str(path)
    pairs = {d: {s: heads for s, heads in spaces.items() if set(HEADS) <= set(heads)}
             for d, spaces in found.items() if any(set(HEADS) <= set(h) for h in spaces.values())}
    return pairs, problems


@st.cache_resource(show_spinner="Loading model...")
def model(path: str):
    return load_checkpoint(path)


@st.cache_resource(show_spinner=False)
def demo(name: str):
    return load_demo(name)


@st.cache_resource(show_spinner="Loading the clean-label judge...")
def judge(name: str):
    """The data set's clean-label judge (``core.judge.default_judge``), over the embedded sample (shared
    by every browser)."""
    return default_judge(demo(name))


@st.cache_resource(show_spinner="Loading the poison gallery...")
def gallery(name: str):
    """A shipped experiment's gallery (``core.gallery``), loaded once per server."""
    return load_gallery(shipped_galleries()[name])


@st.cache_resource(show_spinner=False)
def galleries(dataset: str, space: str | None = None) -> list[str]:
    """Shipped experiments with a gallery for ``dataset``: those in the feature ``space`` ("2-D" or
    "high-d") first when one is given, then the default experiment first."""
    return space_first([n for n in shipped_galleries() if gallery(n).dataset == dataset], dataset, space)


def space_first(names: list[str], dataset: str, space: str | None) -> list[str]:
    """Experiment ``names`` ordered for a picker: those in the sidebar's feature ``space`` first (when
    given), then ``default``, then those whose victim is the lab's own (the warm-started head) before
    the benchmark-protocol grids, then by name; the space is the one ``experiments_for`` worked out."""
    found = experiments_for(dataset)
    spaces = {n: r["space"] for n, r in found.items()}
    lab_victim = {n: r["config"].get("victim", {"head": "warm"}).get("head") == "warm" for n, r in found.items()}
    return sorted(names, key=lambda n: (space is not None and spaces.get(n) != space, n != "default",
                                        not lab_victim.get(n, True), n))


@st.cache_resource(show_spinner=False, ttl=300)
def ladders_for(dataset: str) -> dict[str, dict]:
    """The shipped adaptive ladders (``core.report.load_ladders``) run on ``dataset``; read again
    every 5 minutes, so a ladder growing under ``bench/run_ladder.sh`` shows its new rounds."""
    out = {}
    for name, ladder in load_ladders().items():
        configs = experiment_models(ladder)
        if configs and {c["dataset"] for c in configs} == {dataset}:
            out[name] = ladder
    return out


@st.cache_resource(show_spinner=False)
def shipped_results() -> dict[str, dict]:
    """Every shipped experiment's ``results.json`` (``core.report.load_results``), read once per server."""
    return load_results()


@st.cache_resource(show_spinner=False)
def experiments_for(dataset: str) -> dict[str, dict]:
    """The shipped experiments run on ``dataset``, {name: results} with each one's feature space
    ("2-D" when every model has d = 2, else "high-d") under ``"space"``; worked out once per server."""
    out = {}
    for name, res in shipped_results().items():
        configs = experiment_models(res)
        if configs and {c["dataset"] for c in configs} == {dataset}:
            out[name] = {**res, "space": "2-D" if all(c["feat_dim"] == 2 for c in configs) else "high-d"}
    return out


@st.cache_resource(show_spinner=False)
def targets(dataset: str, space: str) -> np.ndarray:
    """Test-sample indices both models of the chosen pair classify correctly: the fair targets."""
    pair = shipped()[dataset][space]
    return correct_targets([model(pair[h])[0] for h in HEADS], demo(dataset))


@st.cache_resource(show_spinner="Computing features...")
def features(path: str, split: str) -> np.ndarray:
    m, meta = model(path)
    ds = demo(meta["config"]["dataset"])
    return stored_features(m, ds.x_test if split == "test" else ds.x_train, map_key(path), split)


@st.cache_resource(show_spinner=False)
def bank(path: str):
    """The model's features of the whole embedded sample (``core.pipeline.FeatureBank``), shared by
    every browser, so a lab run passes only its poisons through the network."""
    return FeatureBank(features(path, "train"), features(path, "test"))


@st.cache_resource(show_spinner="Crafting an example poison...")
def example(path: str, dataset: str, iters: int = 100) -> tuple:
    """A poison crafted now with the default settings (``core.lab.example_poison``): the Overview's
    fallback where no shipped example exists; once per server (the warm-up makes it at start)."""
    from core.lab import example_poison

    return example_poison(model(path)[0], demo(dataset), iters)


@st.cache_resource(show_spinner="Preparing the 2-D map (a UMAP map's first fit takes ~30 s, then it is cached)...")
def projection(path: str, method: str):
    """The 2-D map of a model's clean test-sample features (raw d = 2 needs no fitting)."""
    if method == "raw":
        return fit_projection(np.zeros((1, 2), np.float32), "raw")
    proj = fit_projection(features(path, "test"), method, seed=0, cache_key=map_key(path))
    if proj.problem:  # a shipped map failed its check; Streamlit replays this wherever the map is reused
        st.sidebar.warning(f"Refitted a 2-D map instead of loading the shipped one: {proj.problem}")
    return proj


def _keep(key: str, options: list) -> str:
    """The widget key for the shared choice ``key``, loaded with the value last chosen on any page.

    Streamlit forgets a widget's value when the page that drew it is not drawn, so a choice made on
    one page was lost on the next. The choice lives under ``key``, which no widget owns; each page's
    widget (key ``_w_<key>``) is loaded from it and writes back to it (Streamlit's documented pattern).
    """
    if st.session_state.get(key) not in options:
        st.session_state[key] = options[0]
    st.session_state[f"_w_{key}"] = st.session_state[key]
    return f"_w_{key}"


def _store(key: str) -> None:
    st.session_state[key] = st.session_state[f"_w_{key}"]


def sidebar() -> tuple[str, str, dict]:
    """The shared choices, dataset and feature space, the same on every page: (dataset, space, {head: path})."""
    if not st.session_state.get("via_app"):
        # A server whose first request is a deep link (/poison_lab) runs the page file on its own,
        # with Streamlit's legacy pages/ listing; go through app.py's navigation instead.
        st.switch_page("app.py")
    available = shipped()
    for problem in checkpoint_problems():
        st.sidebar.warning(f"Skipped a checkpoint: {problem}")
    if not available:
        st.error("No usable pair of softmax + LGM checkpoints in checkpoints/. Train them with "
                 "`poisonlab train ...` (see the README).")
        st.stop()
    datasets = [d for d in DATASET_NAMES if d in available]  # MNIST first: the classroom default
    dataset = st.sidebar.selectbox("Dataset", datasets, key=_keep("dataset", datasets), format_func=DATASET_NAMES.get,
                                   on_change=_store, args=("dataset",))
    spaces = sorted(available[dataset])
    space = st.sidebar.radio("Feature space", spaces, key=_keep("space", spaces), on_change=_store, args=("space",),
                             help="2-D: the network's features are 2 numbers, drawn directly. High-d: "
                                  "features have 64+ numbers and are mapped to 2-D for drawing.")
    pair = available[dataset][space]
    st.sidebar.caption("Models: " + ", ".join(Path(p).name for p in pair.values()))
    return dataset, space, pair
