"""2-D maps: raw d=2, PCA (exact Gaussian marginals), ellipse geometry."""

import numpy as np
import pytest

from core.embeddings import ellipse, fit_projection


def test_raw_only_for_two_dimensions():
    assert fit_projection(np.zeros((3, 2)), "raw").transform(np.ones((1, 2))).tolist() == [[1.0, 1.0]]
    with pytest.raises(ValueError, match="d = 2"):
        fit_projection(np.zeros((3, 5)), "raw")
    with pytest.raises(ValueError, match="unknown projection"):
        fit_projection(np.zeros((3, 5)), "tsne")


def test_pca_projects_gaussians_exactly():
    rng = np.random.default_rng(0)
    var = np.array([4.0, 1.0, 0.25, 0.01])
    x = rng.normal(size=(20000, 4)) * np.sqrt(var)
    proj = fit_projection(x, "pca")
    pts = proj.transform(x)
    assert np.allclose(np.cov(pts.T), proj.ellipse_cov(var), atol=0.08)


def test_ellipse_radius():
    e = ellipse(np.array([1.0, 2.0]), np.diag([4.0, 1.0]), sigma=2)
    r = (e - [1.0, 2.0]) / [4.0, 2.0]  # 2 sigma: semi-axes 4 and 2
    assert np.allclose((r ** 2).sum(1), 1.0)
