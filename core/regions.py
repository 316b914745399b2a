"""Decision regions and likelihood maps of a head on 2-D features, evaluated on a grid.

With d = 2 the head is the whole decision rule in feature space, so drawing which class it picks
at every point shows what poisoning does: a victim retrained on poisons that sit on the target
moves its boundary around the target (softmax) or cannot, because its class means are pinned by
the likelihood term (LGM). ``Grid`` is plain arrays, ready for a heat-map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Grid:
    """``n x n`` points covering a box: ``xs`` [n], ``ys`` [n], ``points`` [n*n, 2] (row-major in y)."""

    xs: np.ndarray
    ys: np.ndarray

    @property
    def points(self) -> np.ndarray:
        gx, gy = np.meshgrid(self.xs, self.ys)
        return np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)


def covering_grid(points: np.ndarray, n: int = 160, pad: float = 0.08) -> Grid:
    """A grid over the box around ``points`` [N, 2], padded by ``pad`` of its size on each side."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError("decision regions need 2-D features")
    lo, hi = points.min(0), points.max(0)
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad * span, hi + pad * span
    return Grid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n))


@torch.no_grad()
def decision_regions(head: torch.nn.Module, grid: Grid) -> np.ndarray:
    """The class ``head`` predicts at every grid point, shape [n_y, n_x]."""
    logits = head(torch.from_numpy(grid.points))
    return logits.argmax(1).numpy().reshape(len(grid.ys), len(grid.xs))


@torch.no_grad()
def max_log_likelihood(head: torch.nn.Module, grid: Grid) -> np.ndarray:
    """An LGM head's log-likelihood of every grid point under its most likely class, [n_y, n_x]:
    high inside the Gaussians, falling off outside, where a poison claiming any class is suspicious."""
    f = torch.from_numpy(grid.points)
    ll = torch.stack([head.log_likelihood(f, torch.full((len(f),), c, dtype=torch.long))
                      for c in range(head.n_classes)], 1)
    return ll.max(1).values.numpy().reshape(len(grid.ys), len(grid.xs))
