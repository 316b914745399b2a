"""What every page shares: cached models, data and features, the sidebar's choices, plot helpers.

Models and maps are cached once per server (``st.cache_resource``) and shared by every browser;
``core`` never changes them (attacks and victims work on copies).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.checkpoints import CheckpointError, list_checkpoints, load_checkpoint, verify_checkpoint
from core.data import load_demo
from core.embeddings import ellipse, fit_projection, map_key
from core.victim import extract_features

COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
# class c -> COLOURS[c] for numeric colour arrays (5x faster to build and send than a list of names)
CLASS_SCALE = [v for c in range(len(COLOURS)) for v in ((c / len(COLOURS), COLOURS[c]),
                                                         ((c + 1) / len(COLOURS), COLOURS[c]))]
DATASET_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}
HEADS = ("softmax", "lgm")


def session_id() -> str:
    """This browser session's id: the owner of its queued jobs."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "local"


def _session_alive(owner: str) -> bool:
    """False once a browser session has closed (its queued job is dropped, its running one stops)."""
    from streamlit.runtime import Runtime

    try:
        return Runtime.instance().is_active_session(owner)
    except RuntimeError:  # no server runtime (AppTest, bare mode): sessions never close under us
        return True


@st.cache_resource(show_spinner=False)
def job_queue():
    """The server's one queue for heavy work, shared by every browser (``core.jobs``): as many
    crafts at once as there are cores; page switches and plots never wait behind it."""
    import os

    from core.jobs import JobQueue

    return JobQueue(workers=max(1, os.cpu_count() or 1), alive=_session_alive)


def heavy_job(label: str, start: bool, work) -> object | None:
    """Queue ``work(job)`` for this session when ``start``; show its place in the queue, progress and a
    cancel button while it waits or runs; return its result once, on the run after it finished."""
    from core.jobs import CANCELLED, DONE, FAILED

    q, owner = job_queue(), session_id()
    if start:
        job = q.submit(owner, label, work)
        if job.label != label:
            st.warning(f"Your {job.label} run is still going: cancel it (on its page) to start another.")
            return None
    job = q.latest(owner)
    if job is None or job.label != label:
        return None
    if job.status == DONE:
        q.collect(job)
        return job.result
    if job.status in (FAILED, CANCELLED):
        q.collect(job)
        if job.status == FAILED:
            st.error(f"The run failed and was stopped: {job.error}")
        else:
            st.info("Cancelled.")
        return None
    _job_status(label)
    return None


@st.fragment(run_every=1.0)
def _job_status(label: str) -> None:
    """Polls the session's job once a second without rerunning the page; reruns it when finished."""
    from core.jobs import FINISHED, QUEUED

    q = job_queue()
    job = q.latest(session_id())
    if job is None or job.label != label or job.status in FINISHED:
        st.rerun(scope="app")
    if job.status == QUEUED:
        ahead = q.position(job) - 1
        st.info(f"Waiting for a free worker: {ahead} run(s) ahead of yours, {q.workers} run at once. "
                f"Waiting {job.wait_s:.0f} s so far.")
    else:
        st.progress(job.progress, f"{job.message} ({time.monotonic() - job.started:.0f} s)")
    if st.button("Cancel", key=f"cancel_{label}"):
        q.cancel(job)
        st.rerun(scope="app")


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


@st.cache_data(show_spinner=False)
def demo(name: str):
    return load_demo(name)


@st.cache_resource(show_spinner="Loading the clean-label judge...")
def judge(name: str):
    """The data set's clean-label judge, voting over the embedded sample (shared by every browser)."""
    from core.judge import load_judge

    return load_judge(demo(name))


@st.cache_resource(show_spinner="Loading the poison gallery...")
def gallery(name: str):
    """A shipped experiment's gallery (``core.gallery``), loaded once per server."""
    from core.gallery import load_gallery, shipped_galleries

    return load_gallery(shipped_galleries()[name])


@st.cache_data(show_spinner=False)
def galleries(dataset: str) -> list[str]:
    """Shipped experiments with a gallery for ``dataset``, the default experiment first."""
    from core.gallery import shipped_galleries

    names = [n for n in shipped_galleries() if gallery(n).dataset == dataset]
    return sorted(names, key=lambda n: (n != "default", n))


def pick_showcase(dataset: str, space: str):
    """(experiment name, gallery, Showcase) for the selected data set, preferring an experiment in the
    selected feature space and the ``default`` one; None when no shipped trial qualifies."""
    from core.gallery import showcase

    names = galleries(dataset)
    names = sorted(names, key=lambda n: ((gallery(n).models[next(iter(gallery(n).models))]["feat_dim"] == 2)
                                         != (space == "2-D"), n != "default", n))
    for name in names:
        found = showcase(gallery(name))
        if found is not None:
            return name, gallery(name), found
    return None


def draw_showcase(dataset: str, space: str) -> bool:
    """The classroom's opening example: a shipped clean-label poisoning of the softmax victim beside the
    same target and bases crafted against the LGM model, with the measured rate. False when none exists."""
    from core.defences import label as defence_label

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
    cols[0].image(image_for_display(target), width=110, caption=f"target: a {classes[t['target_label']]}")
    cols[1].image(image_for_display(bases[0]), width=110, caption=f"base: a {classes[t['base_class']]}")
    cols[2].image(image_for_display(poisons[0]), width=110,
                  caption=f"poison: the judges call it a {classes[t['base_class']]}")
    cols[3].image(image_for_display(amplified(poisons[0], bases[0])), width=110,
                  caption="what changed, amplified (grey: nothing)")
    sides = [("softmax", sc.softmax)] + ([("lgm", sc.lgm)] if sc.lgm is not None else [])
    cols = st.columns(2)
    ds = demo(dataset)
    for col, (head, i) in zip(cols, sides):
        tr = g.trials[i]
        model_name = tr["model"]
        info = g.models[model_name]
        proj = projection(info["path"], "raw" if info["feat_dim"] == 2 else "pca")
        target_f, base_f, poison_f = (proj.transform(np.atleast_2d(a)) for a in g.features(i, model_name))
        m, _ = model(info["path"])
        gauss = tuple(x.numpy() for x in m.head.gaussians()) if head == "lgm" else None
        fig = feature_figure(proj.transform(features(info["path"], "test")), ds.y_test, ds.classes,
                             f"{'Softmax' if head == 'softmax' else 'LGM'} model: poisons crafted against it",
                             proj, gauss, poison_markers(target_f[0], base_f, poison_f))
        col.plotly_chart(fig, width="stretch", key=f"showcase_{head}")
        none = tr["victims"]["none"]
        text = (f"Retrained on the poisoned data, the {'softmax' if head == 'softmax' else 'LGM'} victim calls the "
                f"target a **{classes[none['pred_after']]}**: {'**poisoned**' if none['success'] else 'not poisoned'}.")
        own = tr["victims"].get("lgm" if head == "lgm" else "centroid")
        if own and own["flagged"] is not None:
            text += (f" Its filter ({defence_label('lgm' if head == 'lgm' else 'centroid')}) caught "
                     f"{sum(own['flagged'])} of {len(own['flagged'])} poisons, throwing away {100 * g.config['fpr']:.0f}% of clean images.")
        col.markdown(text)
    return True


@st.cache_data(show_spinner=False)
def targets(dataset: str, space: str) -> np.ndarray:
    """Test-sample indices both models of the chosen pair classify correctly: the fair targets."""
    from core.pipeline import correct_targets

    pair = shipped()[dataset][space]
    return correct_targets([model(pair[h])[0] for h in HEADS], demo(dataset))


@st.cache_data(show_spinner="Computing features...")
def features(path: str, split: str) -> np.ndarray:
    m, meta = model(path)
    ds = demo(meta["config"]["dataset"])
    return extract_features(m, ds.x_test if split == "test" else ds.x_train).numpy()


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


def image_for_display(img: np.ndarray) -> np.ndarray:
    """uint8 or [0, 1] float HWC -> something ``st.image`` shows (2-D for grayscale)."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def selected_index(event) -> int | None:
    """The sample index a user clicked or lasso-selected in a ``feature_figure`` (first one): read
    from the samples trace's customdata, so other traces (a background, markers) never count."""
    try:
        selection = event["selection"]
    except (KeyError, TypeError):
        return None
    points = [p for p in selection.get("points", []) if isinstance(p.get("customdata"), (list, tuple))]
    indices = [int(p["customdata"][0]) for p in points] or list(selection.get("point_indices", []))
    return int(indices[0]) if indices else None


AXIS_NAMES = {"raw": ("feature 1", "feature 2"), "pca": ("principal direction 1", "principal direction 2"),
              "umap": ("UMAP 1", "UMAP 2")}


def feature_figure(points: np.ndarray, labels: np.ndarray, classes: tuple, title: str, proj=None,
                   gaussians: tuple | None = None, extra: list | None = None, sigmas: tuple = (2,),
                   background: go.Heatmap | None = None) -> go.Figure:
    """Scatter of 2-D points coloured by class, the LGM means and their ``sigmas`` ellipses (one
    2-sigma ring per class by default: more rings hid the points), then ``extra`` traces on top;
    ``background`` (decision regions, a likelihood map) goes under everything.

    Traces are plain dicts and the figure skips Plotly's validation (every page draws these on every
    run: validating ~1000 points cost 5x the rest). The traces are made here, so they are valid.
    """
    def plain(trace) -> dict:
        return trace.to_plotly_json() if hasattr(trace, "to_plotly_json") else trace

    data = [plain(background)] if background is not None else []
    # one trace for every clickable point; SVG over a background (WebGL points would sit under it)
    data.append({"type": "scatter" if background is not None else "scattergl", "x": points[:, 0], "y": points[:, 1],
                 "mode": "markers", "name": "samples", "showlegend": False,
                 "marker": {"size": 6, "color": np.asarray(labels), "colorscale": CLASS_SCALE, "cmin": -0.5,
                            "cmax": len(COLOURS) - 0.5, "opacity": 0.55},
                 "customdata": np.stack([np.arange(len(labels)), labels], 1),
                 "hovertemplate": "#%{customdata[0]} class %{customdata[1]}<extra></extra>"})
    data += [{"type": "scattergl", "x": [None], "y": [None], "mode": "markers", "name": name,  # legend entries
              "marker": {"size": 8, "color": COLOURS[c]}} for c, name in enumerate(classes)]
    if gaussians is not None and proj is not None:
        means, variances = gaussians
        centres = proj.transform(means)
        for c in range(len(means)):
            cov = proj.ellipse_cov(variances[c])
            for sigma in sigmas if cov is not None else ():
                e = ellipse(centres[c], cov, sigma)
                data.append({"type": "scatter", "x": e[:, 0], "y": e[:, 1], "mode": "lines", "hoverinfo": "skip",
                             "line": {"color": COLOURS[c], "width": 1.5}, "showlegend": False})
        data.append({"type": "scatter", "x": centres[:, 0], "y": centres[:, 1], "mode": "markers",
                     "name": "class centre (LGM)", "marker": {"symbol": "x", "size": 10, "color": "black"}})
    data += [plain(t) for t in extra or []]
    x_name, y_name = AXIS_NAMES.get(getattr(proj, "method", "raw"), ("", ""))
    layout = {"title": {"text": title}, "height": 460, "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
              "legend": {"itemsizing": "constant"}, "xaxis": {"title": {"text": x_name}},
              "yaxis": {"title": {"text": y_name}}}
    return go.Figure(data=data, layout=layout, _validate=False)


def regions_heatmap(head, grid) -> go.Heatmap:
    """Which class ``head`` picks at each point of ``grid`` (``core.regions``), in the class colours."""
    from core.regions import decision_regions

    return go.Heatmap(x=grid.xs, y=grid.ys, z=decision_regions(head, grid), zmin=-0.5, zmax=len(COLOURS) - 0.5,
                      colorscale=CLASS_SCALE, opacity=0.22, showscale=False, hoverinfo="skip")


@st.cache_data(show_spinner=False)
def _likelihood_grid(path: str, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ys, log-likelihood) of a shipped LGM model over its test features' box, once per server."""
    from core.regions import covering_grid, max_log_likelihood

    grid = covering_grid(projection(path, method).transform(features(path, "test")))
    return grid.xs, grid.ys, max_log_likelihood(model(path)[0].head, grid)


def likelihood_heatmap(path: str, method: str = "raw") -> go.Heatmap:
    """The LGM model's log-likelihood under its most likely class, as a shading (darker: more likely)."""
    xs, ys, ll = _likelihood_grid(path, method)
    return go.Heatmap(x=xs, y=ys, z=ll, zmin=float(np.quantile(ll, 0.05)), zmax=float(ll.max()),
                      colorscale="Greys", reversescale=True, opacity=0.5, hoverinfo="skip", showscale=False)


def poison_markers(target: np.ndarray, bases: np.ndarray, poisons: np.ndarray) -> list[go.Scatter]:
    """Target, bases and poisons (already in the plot's 2-D coordinates) as outlined markers with a
    thin line from each base to its poison: big enough to see on top of a dense class cloud, named
    in the legend rather than with text that overlaps."""
    outline = {"width": 2, "color": "white"}
    lines_x, lines_y = [], []
    for b, p in zip(bases, poisons):
        lines_x += [b[0], p[0], None]
        lines_y += [b[1], p[1], None]
    return [go.Scatter(x=lines_x, y=lines_y, mode="lines", line={"color": "black", "width": 1, "dash": "dot"},
                       hoverinfo="skip", showlegend=False),
            go.Scatter(x=bases[:, 0], y=bases[:, 1], mode="markers", name="base images",
                       marker={"symbol": "circle", "size": 12, "color": "white", "line": {"width": 2.5,
                                                                                         "color": "black"}}),
            go.Scatter(x=[target[0]], y=[target[1]], mode="markers", name="target",
                       marker={"symbol": "diamond", "size": 18, "color": "gold", "line": {"width": 2,
                                                                                         "color": "black"}}),
            go.Scatter(x=poisons[:, 0], y=poisons[:, 1], mode="markers", name="poisons",
                       marker={"symbol": "star", "size": 17, "color": "black", "line": outline})]


def amplified(poison: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The change a poison makes, scaled so its largest pixel change is full contrast (grey = no change)."""
    diff = poison.astype(np.float32) - base.astype(np.float32)
    return (0.5 + diff / (2 * max(1e-6, float(np.abs(diff).max())))).astype(np.float32)
