"""Maps from penultimate features to the 2-D plane, and the LGM Gaussians drawn in it.

- ``raw``: d = 2 features are drawn as they are (the paper's setting: Gaussians exact).
- ``pca``: a linear map fitted on clean features; a Gaussian stays a Gaussian under it, so the
  projected 1/2/3-sigma ellipses are exact marginals.
- ``umap``: fitted on clean features, new points (poisons, targets) placed with ``transform``.
  UMAP's first call compiles numba code (~25 s) and fitting takes more, so fitted maps are
  stored on disk under a key naming the checkpoint and the data (``python -m core precompute-maps``
  ships them in ``checkpoints/maps/``; others go to ``~/.cache/poisonlab``); class means are
  placed by ``transform``, no ellipse is claimed.

The clean features a map is drawn over are stored the same way (``features_KEY_SPLIT.npy``): they are
a pure function of the weights and the embedded sample, and computing them is most of the dashboard's
cold start (~2 s per model on 2 cores). An ``.npy`` is read with ``allow_pickle=False``, so no code runs
on load and no side file is needed; one of the wrong shape is recomputed.

A map is a joblib pickle, and unpickling runs code, so maps get the checkpoints' trust: every map
is written with ``MAP.joblib.sha256`` beside it (``sha256sum``'s format) and ``load_map`` refuses
one whose bytes do not match before anything is unpickled. A shipped map that fails is refitted
into the user cache instead, and the reason travels with the ``Projection`` for the dashboard.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np

from .checkpoints import read_meta, sha256_file
from .data import demo_path
from .models import extract_features

METHODS = ("raw", "pca", "umap")
CACHE_DIR = Path(os.environ.get("POISONLAB_CACHE", "~/.cache/poisonlab")).expanduser()
SHIPPED_MAPS = Path(__file__).resolve().parent.parent / "checkpoints" / "maps"


@dataclass
class Projection:
    """A fitted 2-D map: ``transform`` places any features (clean, poisons, targets) in it."""

    method: str
    mean: np.ndarray | None = None
    components: np.ndarray | None = None  # [2, d] for PCA
    umap_model: object | None = None
    problem: str | None = None  # why a shipped map was refused and refitted

    def transform(self, feats: np.ndarray) -> np.ndarray:
        feats = np.asarray(feats, dtype=np.float32)
        if self.method == "raw":
            return feats[:, :2]
        if self.method == "pca":
            return (feats - self.mean) @ self.components.T
        return np.asarray(self.umap_model.transform(feats))

    def ellipse_cov(self, variances: np.ndarray) -> np.ndarray | None:
        """2x2 covariance of a diagonal Gaussian after the map, or None when the map is not linear."""
        if self.method == "raw":
            return np.diag(variances[:2])
        if self.method == "pca":
            return self.components @ np.diag(variances) @ self.components.T
        return None


def fit_projection(feats: np.ndarray, method: str, seed: int = 0, cache_key: str | None = None) -> Projection:
    """Fit a 2-D map on clean features (UMAP maps are cached on disk under ``cache_key``)."""
    feats = np.asarray(feats, dtype=np.float32)
    if method == "raw":
        if feats.shape[1] != 2:
            raise ValueError("raw features can only be drawn for d = 2; use pca or umap")
        return Projection("raw")
    if method == "pca":
        mean = feats.mean(0)
        _, _, vt = np.linalg.svd(feats - mean, full_matrices=False)
        return Projection("pca", mean=mean, components=vt[:2])
    if method == "umap":
        model, problem = _cached_umap(feats, seed, cache_key)
        return Projection("umap", umap_model=model, problem=problem)
    raise ValueError(f"unknown projection {method!r}; choose one of {METHODS}")


def map_key(checkpoint: str | Path) -> str:
    """Names a 2-D map by the checkpoint's weights and the demo sample it was fitted on."""

    meta = read_meta(checkpoint)
    demo = hashlib.sha256(demo_path(meta["config"]["dataset"]).read_bytes()).hexdigest()
    return f"{meta['sha256'][:12]}_{demo[:8]}"


def map_path(cache_key: str, seed: int, shipped: bool = False) -> Path:
    return (SHIPPED_MAPS if shipped else CACHE_DIR) / f"umap_{cache_key}_{seed}.joblib"


class MapError(ValueError):
    """A map file is missing, has no sha256 side file, does not match it, or does not load."""


def map_side_file(path: str | Path) -> Path:
    return Path(f"{path}.sha256")


def save_map(model: object, path: str | Path) -> Path:
    """Write a fitted map and then its sha256 side file (a crash in between leaves a map that
    fails its check, so it is refitted, never trusted)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    joblib.dump(model, tmp)
    tmp.replace(path)
    map_side_file(path).write_text(f"{sha256_file(path)}  {path.name}\n")
    return path


def verify_map(path: str | Path) -> str:
    """The sha256 of a map file that matches its side file; ``MapError`` otherwise."""
    path, side = Path(path), map_side_file(path)
    if not path.is_file():
        raise MapError(f"{path}: no such map")
    try:
        recorded = side.read_text().split()[0].lower()
    except FileNotFoundError:
        raise MapError(f"{path}: side file {side.name} missing (written with every map by "
                       "`poisonlab precompute-maps`); refusing to unpickle it") from None
    except (IndexError, OSError, UnicodeDecodeError):
        raise MapError(f"{side}: unreadable side file; refusing to unpickle {path.name}") from None
    actual = sha256_file(path)
    if actual != recorded:
        raise MapError(f"{path}: sha256 does not match {side.name}; the file was changed or truncated, "
                       "refusing to unpickle it")
    return actual


def load_map(path: str | Path) -> object:
    """A map whose bytes match its side file, unpickled only after that check."""
    verify_map(path)
    try:
        return joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - e.g. written by another umap-learn; the caller refits
        raise MapError(f"{path}: matches its side file but does not load ({type(exc).__name__}: {exc})") from None


def fit_umap(feats: np.ndarray, seed: int = 0) -> object:
    """A 2-D UMAP fitted on clean features, seeded."""
    import umap  # optional until a map is fitted: numba compiles for seconds on import

    return umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=seed).fit(feats)


def _cached_umap(feats: np.ndarray, seed: int, cache_key: str | None) -> tuple[object, str | None]:
    """(UMAP model, why the shipped map was refused or None): the shipped map if it passes its
    check, else the user cache's, else a fresh fit stored in the user cache. A cache file that
    fails is simply refitted over (the cache is this program's own)."""
    key = cache_key or hashlib.sha256(feats.tobytes()).hexdigest()[:16]
    problem = None
    shipped, cached = map_path(key, seed, shipped=True), map_path(key, seed)
    if shipped.is_file():
        try:
            return load_map(shipped), None
        except MapError as exc:
            problem = str(exc)
    if cached.is_file():
        try:
            return load_map(cached), problem
        except MapError:
            pass
    model = fit_umap(feats, seed)
    save_map(model, cached)
    return model, problem


def features_path(cache_key: str, split: str, shipped: bool = False) -> Path:
    return (SHIPPED_MAPS if shipped else CACHE_DIR) / f"features_{cache_key}_{split}.npy"


def stored_features(model, images: np.ndarray, cache_key: str, split: str) -> np.ndarray:
    """``extract_features(model, images)``, read from the shipped or user cache when present there
    (``cache_key`` from ``map_key`` names the weights and the sample), else computed and cached."""
    shape = (len(images), model.config.feat_dim)
    for path in (features_path(cache_key, split, shipped=True), features_path(cache_key, split)):
        feats = read_features(path, shape)
        if feats is not None:
            return feats
    feats = extract_features(model, images).numpy()
    try:
        save_features(feats, features_path(cache_key, split))
    except OSError:  # a read-only home: the features are still right, only not kept
        pass
    return feats


def read_features(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """Stored features of this shape, or None: missing, empty, truncated, not an .npy (any reading
    error), or of another shape or type, so the caller recomputes them."""
    try:
        feats = np.load(path, allow_pickle=False)
    except Exception:  # noqa: BLE001 - OSError, ValueError, EOFError (empty file), ...
        return None
    return feats if isinstance(feats, np.ndarray) and feats.shape == shape and feats.dtype == np.float32 else None


def save_features(feats: np.ndarray, path: Path) -> Path:
    """Write features atomically (a half-written file would fail the shape check, but never exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, np.asarray(feats, np.float32))
    tmp.replace(path)
    return path


def ellipse(centre: np.ndarray, cov: np.ndarray, sigma: float, n: int = 72) -> np.ndarray:
    """Points [n, 2] on the ``sigma`` contour of a 2-D Gaussian."""
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    return (centre[:, None] + vecs @ (np.sqrt(np.clip(vals, 0, None))[:, None] * sigma * circle)).T
