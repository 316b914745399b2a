"""Maps from penultimate features to the 2-D plane, and the LGM Gaussians drawn in it.

- ``raw``: d = 2 features are drawn as they are (the paper's setting: Gaussians exact).
- ``pca``: a linear map fitted on clean features; a Gaussian stays a Gaussian under it, so the
  projected 1/2/3-sigma ellipses are exact marginals.
- ``umap``: fitted on clean features, new points (poisons, targets) placed with ``transform``.
  UMAP's first call compiles numba code (~25 s) and fitting takes more, so fitted maps are
  stored on disk under a key naming the checkpoint and the data (``python -m core precompute-maps``
  ships them in ``checkpoints/maps/``; others go to ``~/.cache/poisonlab``); class means are
  placed by ``transform``, no ellipse is claimed.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
        return Projection("umap", umap_model=_cached_umap(feats, seed, cache_key))
    raise ValueError(f"unknown projection {method!r}; choose one of {METHODS}")


def map_key(checkpoint: str | Path) -> str:
    """Names a 2-D map by the checkpoint's weights and the demo sample it was fitted on."""
    from .checkpoints import read_meta
    from .data import demo_path

    meta = read_meta(checkpoint)
    demo = hashlib.sha256(demo_path(meta["config"]["dataset"]).read_bytes()).hexdigest()
    return f"{meta['sha256'][:12]}_{demo[:8]}"


def map_path(cache_key: str, seed: int, shipped: bool = False) -> Path:
    return (SHIPPED_MAPS if shipped else CACHE_DIR) / f"umap_{cache_key}_{seed}.joblib"


def _cached_umap(feats: np.ndarray, seed: int, cache_key: str | None):
    import joblib

    key = cache_key or hashlib.sha256(feats.tobytes()).hexdigest()[:16]
    for path in (map_path(key, seed, shipped=True), map_path(key, seed)):
        if path.is_file():
            try:
                return joblib.load(path)  # written by this program (shipped or cached), never by a user
            except Exception:  # noqa: BLE001 - a broken cache file is refitted
                continue
    import umap

    model = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=seed).fit(feats)
    path = map_path(key, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)
    return model


def ellipse(centre: np.ndarray, cov: np.ndarray, sigma: float, n: int = 72) -> np.ndarray:
    """Points [n, 2] on the ``sigma`` contour of a 2-D Gaussian."""
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    return (centre[:, None] + vecs @ (np.sqrt(np.clip(vals, 0, None))[:, None] * sigma * circle)).T
