"""Plot helpers every page draws with: the class-coloured feature scatter (and ``space_figure``, a
shipped model's feature space), poison markers, decision regions, the LGM likelihood shading, images
for display. Charts of measured results are in ``pages/figures.py``, and so are the colours."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.embeddings import ellipse
from core.export import amplified_change as amplified, to_display as image_for_display  # noqa: F401 - pages' names
from core.regions import covering_grid, decision_regions, max_log_likelihood
from pages.common import demo, features, model, projection
from pages.figures import COLOURS, frozen

# class c -> COLOURS[c] for numeric colour arrays (5x faster to build and send than a list of names)
CLASS_SCALE = [v for c in range(len(COLOURS)) for v in ((c / len(COLOURS), COLOURS[c]),
                                                         ((c + 1) / len(COLOURS), COLOURS[c]))]


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


def show_image(where, image, **kwargs) -> None:
    """``where.image(image, ...)`` sent as PNG: Streamlit's automatic format sends an image without
    transparency as JPEG, which blurs the very perturbations the pages show, and decoded and
    re-encoded the gallery's cached PNGs on every run."""
    where.image(image, output_format="PNG", **kwargs)


AXIS_NAMES = {"raw": ("feature 1", "feature 2"), "pca": ("principal direction 1", "principal direction 2"),
              "umap": ("UMAP 1", "UMAP 2")}


def feature_figure(points: np.ndarray, labels: np.ndarray, classes: tuple, title: str, proj=None,
                   gaussians: tuple | None = None, extra: list | None = None, sigmas: tuple = (2,),
                   background: go.Heatmap | None = None, filter_sigmas: np.ndarray | None = None) -> go.Figure:
    """Scatter of 2-D points coloured by class, the LGM means and their ``sigmas`` ellipses (one
    2-sigma ring per class by default: more rings hid the points), then ``extra`` traces on top;
    ``background`` (decision regions, a likelihood map) goes under everything. ``filter_sigmas``
    (per class, raw 2-D features only): the likelihood filter's threshold, drawn as a dashed ring
    per class in place of the sigma rings: a poison outside its claimed class's ring is flagged.

    Traces are plain dicts and the figure skips Plotly's validation (every page draws these on every
    run: validating ~1000 points cost 5x the rest). The traces are made here, so they are valid.
    """
    def plain(trace) -> dict:
        return trace.to_plotly_json() if hasattr(trace, "to_plotly_json") else trace

    data = [plain(background)] if background is not None else []
    # one trace for every clickable point. Plotly paints WebGL points above every SVG trace, so they
    # are SVG whenever something is drawn with them: a background would cover them, and they would
    # cover the class centres, targets, bases and poisons drawn on top
    svg = background is not None or gaussians is not None or bool(extra)
    data.append({"type": "scatter" if svg else "scattergl", "x": points[:, 0], "y": points[:, 1],
                 "mode": "markers", "name": "samples", "showlegend": False,
                 "marker": {"size": 6, "color": np.asarray(labels), "colorscale": CLASS_SCALE, "cmin": -0.5,
                            "cmax": len(COLOURS) - 0.5, "opacity": 0.55},
                 "customdata": np.stack([np.arange(len(labels)), labels], 1),
                 "hovertemplate": "#%{customdata[0]} class %{customdata[1]}<extra></extra>"})
    # legend entries, of the points' own kind: a WebGL entry in an SVG chart made the browser open a
    # WebGL context for every chart (the lab's 2-D result page has eight; each costs time to create,
    # a lot of it without a GPU, and a page gets only so many)
    data += [{"type": "scatter" if svg else "scattergl", "x": [None], "y": [None], "mode": "markers", "name": name,
              "marker": {"size": 8, "color": COLOURS[c]}} for c, name in enumerate(classes)]
    if gaussians is not None and proj is not None:
        means, variances = gaussians
        centres = proj.transform(means)
        for c in range(len(means)):
            cov = proj.ellipse_cov(variances[c])
            rings = (filter_sigmas[c],) if filter_sigmas is not None else sigmas
            for sigma in rings if cov is not None else ():
                e = ellipse(centres[c], cov, sigma)
                data.append({"type": "scatter", "x": e[:, 0], "y": e[:, 1], "mode": "lines", "hoverinfo": "skip",
                             "line": {"color": COLOURS[c], "width": 2 if filter_sigmas is not None else 1.5,
                                      "dash": "dash" if filter_sigmas is not None else "solid"},
                             "name": "filter threshold: outside is flagged", "legendgroup": "threshold",
                             "showlegend": filter_sigmas is not None and c == 0})
        data.append({"type": "scatter", "x": centres[:, 0], "y": centres[:, 1], "mode": "markers",
                     "name": "class centre (LGM)", "marker": {"symbol": "x", "size": 10, "color": "black"}})
    data += [plain(t) for t in extra or []]
    x_name, y_name = AXIS_NAMES.get(getattr(proj, "method", "raw"), ("", ""))
    layout = {"title": {"text": title}, "height": 460, "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
              "legend": {"itemsizing": "constant"}, "xaxis": {"title": {"text": x_name}},
              "yaxis": {"title": {"text": y_name}}}
    return go.Figure(data=data, layout=layout, _validate=False)


def display_sample(n: int, k: int) -> np.ndarray:
    """Sorted indices of at most ``k`` of ``n`` points, the same every time (seed 0): a page that draws
    several maps of one result draws this sample of the test images in each. A browser without a GPU
    spends ~0.5 ms per drawn point of an SVG chart, so 1000 points in each of the lab's charts kept it
    busy for seconds."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, k, replace=False))


def space_figure(path: str, title: str, method: str | None = None, poisons: tuple | None = None,
                 extra: list | None = None, gaussians: bool = True, sigmas: tuple = (2,),
                 background: go.Heatmap | None = None, threshold: float | None = None,
                 class_ids: tuple[int, ...] | None = None, max_points: int | None = None) -> go.Figure:
    """A checkpoint's feature space as every page draws it: its stored test-sample features, mapped to
    2-D with ``method`` (default: "raw" for d = 2 features, else "pca"), coloured by class, with the
    Gaussians (``sigmas`` rings and centres) when it is an LGM model and ``gaussians`` is true.

    ``poisons``: (target, bases, poisons) in the model's own feature space, drawn with ``poison_markers``;
    ``extra``: traces already in the plot's coordinates (``projection(path, method)`` maps to them);
    ``background`` goes under everything (``feature_figure``). ``threshold``: the LGM likelihood
    filter's threshold (minus log-likelihood) to draw as each class's ring, on raw 2-D features.
    ``class_ids``: a model pretrained on other classes, drawn for a victim of these (full-data-set
    ids, in the victim's label order): only their sample images, named as the victim names them, and
    no Gaussians (the model's own describe the classes it was trained on). ``max_points``: draw
    ``display_sample`` of the test images, not all.
    """
    m, meta = model(path)
    cfg = meta["config"]
    method = method or ("raw" if cfg["feat_dim"] == 2 else "pca")
    proj = projection(path, method)
    ds = demo(cfg["dataset"])
    points, labels, names = proj.transform(features(path, "test")), ds.y_test, ds.classes
    if class_ids is not None:
        keep = np.isin(labels, class_ids)
        remap = np.full(len(ds.classes), -1)
        remap[list(class_ids)] = np.arange(len(class_ids))
        points, labels, names = points[keep], remap[labels[keep]], tuple(ds.classes[c] for c in class_ids)
        gaussians, threshold = False, None
    if max_points is not None:
        keep = display_sample(len(points), max_points)
        points, labels = points[keep], labels[keep]
    gauss = tuple(x.numpy() for x in m.head.gaussians()) if gaussians and cfg["head"] == "lgm" else None
    marks = list(extra or [])
    if poisons is not None:
        target_f, base_f, poison_f = (proj.transform(np.atleast_2d(a)) for a in poisons)
        marks = poison_markers(target_f[0], base_f, poison_f) + marks
    rings = (m.head.threshold_sigmas(threshold) if threshold is not None and gauss is not None and method == "raw"
             else None)
    return feature_figure(points, labels, names, title, proj, gauss,
                          marks or None, sigmas=sigmas, background=background, filter_sigmas=rings)


@st.cache_resource(show_spinner=False, max_entries=4096)
def trial_pngs(experiment: str, index: int, n: int = 3) -> dict[str, list[bytes]]:
    """A shipped trial's target, first ``n`` bases and poisons and the amplified change, PNG-encoded
    once per server: the gallery shows dozens of them on every run, and encoding them each time was
    a large share of a class's server time."""
    import io

    from PIL import Image

    from pages.common import gallery

    def png(img: np.ndarray) -> bytes:
        out = io.BytesIO()
        Image.fromarray(image_for_display(img)).save(out, format="PNG")
        return out.getvalue()

    target, bases, poisons = gallery(experiment).images(index)
    return {"target": [png(target)], "bases": [png(b) for b in bases[:n]], "poisons": [png(p) for p in poisons[:n]],
            "change": [png(amplified(poisons[0], bases[0]))]}


@st.cache_resource(show_spinner=False, max_entries=512)
def trial_space_figure(experiment: str, index: int, model_name: str, title: str, sigmas: tuple = (2,),
                       threshold: float | None = None) -> go.Figure:
    """``space_figure`` of one shipped trial's poisons in one model's features, built once per server
    (the gallery and the showcase draw two on every run; the figures are never changed after)."""
    from pages.common import gallery

    g = gallery(experiment)
    return frozen(space_figure(g.models[model_name]["path"], title, poisons=g.features(index, model_name),
                               sigmas=sigmas, threshold=threshold, class_ids=g.class_ids))


def regions_heatmap(head, grid) -> go.Heatmap:
    """Which class ``head`` picks at each point of ``grid`` (``core.regions``), in the class colours."""
    return go.Heatmap(x=grid.xs, y=grid.ys, z=decision_regions(head, grid), zmin=-0.5, zmax=len(COLOURS) - 0.5,
                      colorscale=CLASS_SCALE, opacity=0.22, showscale=False, hoverinfo="skip")


@st.cache_resource(show_spinner=False)
def _likelihood_grid(path: str, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xs, ys, log-likelihood) of a shipped LGM model over its test features' box, once per server."""
    grid = covering_grid(projection(path, method).transform(features(path, "test")))
    return grid.xs, grid.ys, max_log_likelihood(model(path)[0].head, grid)


def likelihood_heatmap(path: str, method: str = "raw") -> go.Heatmap:
    """The LGM model's log-likelihood under its most likely class, as a shading (light: likely, dark: not)."""
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
