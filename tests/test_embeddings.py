"""2-D maps: raw d=2, PCA (exact Gaussian marginals), ellipse geometry; stored maps are hash-checked."""

import hashlib
import json
import pickle

import numpy as np
import pytest

from core import embeddings
from core.data import load_demo
from core.embeddings import MapError, ellipse, fit_projection, load_map, map_side_file, save_map, verify_map


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


class _Marker:
    """Unpickling this creates ``path``: proof that a refused map was never unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class _FakeUmap:
    """Stands in for a fitted UMAP where only the caching logic is under test."""

    def __init__(self, n: int):
        self.n = n

    def transform(self, feats):
        return np.asarray(feats)[:, :2]


def test_a_good_map_loads_and_its_hash_is_checkable_by_sha256sum(tmp_path):
    path = save_map({"fitted": [1, 2, 3]}, tmp_path / "umap_k_0.joblib")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert map_side_file(path).read_text() == f"{digest}  {path.name}\n"
    assert verify_map(path) == digest
    assert load_map(path) == {"fitted": [1, 2, 3]}


def test_a_tampered_map_is_refused_before_unpickling(tmp_path):
    path = save_map({"fitted": 1}, tmp_path / "umap_k_0.joblib")
    with open(path, "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(MapError, match="sha256 does not match"):
        load_map(path)
    marker = tmp_path / "unpickled"
    path.write_bytes(pickle.dumps(_Marker(marker)))  # a malicious map under the old side file
    with pytest.raises(MapError, match="sha256 does not match"):
        load_map(path)
    assert not marker.exists()


def test_a_map_without_side_file_is_refused(tmp_path):
    path = save_map({"fitted": 1}, tmp_path / "umap_k_0.joblib")
    map_side_file(path).unlink()
    with pytest.raises(MapError, match="side file .* missing"):
        load_map(path)
    with pytest.raises(MapError, match="no such map"):
        verify_map(tmp_path / "absent.joblib")
    assert issubclass(MapError, ValueError)


@pytest.fixture
def map_dirs(tmp_path, monkeypatch):
    """Shipped and cache folders in tmp_path; UMAP replaced by a counted stand-in."""
    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    monkeypatch.setattr(embeddings, "SHIPPED_MAPS", shipped)
    monkeypatch.setattr(embeddings, "CACHE_DIR", cache)
    fits = []
    fake = lambda feats, seed=0: fits.append(seed) or _FakeUmap(len(feats))  # noqa: E731
    monkeypatch.setattr(embeddings, "fit_umap", fake)
    from core import cli
    monkeypatch.setattr(cli, "fit_umap", fake)  # the CLI imports it by name
    return shipped, cache, fits


def test_a_tampered_shipped_map_is_refitted_into_the_cache_and_reported(map_dirs, tmp_path):
    shipped, cache, fits = map_dirs
    feats = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
    good = save_map(_FakeUmap(-1), embeddings.map_path("k", 0, shipped=True))
    assert fit_projection(feats, "umap", cache_key="k").umap_model.n == -1 and not fits  # a good shipped map
    marker = tmp_path / "unpickled"
    good.write_bytes(pickle.dumps(_Marker(marker)))
    proj = fit_projection(feats, "umap", cache_key="k")
    assert not marker.exists() and fits == [0] and proj.umap_model.n == 60  # refitted, not loaded
    assert "sha256 does not match" in proj.problem and str(good) in proj.problem
    cached = embeddings.map_path("k", 0)
    assert cached.parent == cache and verify_map(cached)  # the refit is cached with its side file
    again = fit_projection(feats, "umap", cache_key="k")
    assert fits == [0] and again.umap_model.n == 60 and again.problem == proj.problem  # still reported
    assert fit_projection(feats, "pca").problem is None


def test_a_broken_cache_map_is_refitted_over(map_dirs):
    _, _, fits = map_dirs
    feats = np.zeros((10, 3), np.float32)
    cached = save_map(_FakeUmap(-1), embeddings.map_path("k", 0))
    map_side_file(cached).unlink()  # e.g. written before maps had side files
    proj = fit_projection(feats, "umap", cache_key="k")
    assert fits == [0] and proj.umap_model.n == 10 and proj.problem is None and verify_map(cached)


def test_precompute_maps_writes_side_files_and_refits_failing_maps(map_dirs, monkeypatch, capsys, tmp_path):
    import torch

    from core import cli
    from core.checkpoints import save_checkpoint
    from core.models import Classifier, default_config

    shipped, _, fits = map_dirs
    torch.manual_seed(0)
    ckpt = save_checkpoint(Classifier(default_config("mnist", "lgm", 8, arch="resnet", depth=1, width=16)),
                           tmp_path / "lgm_d8.pt", {})
    monkeypatch.setattr(cli, "list_checkpoints", lambda: [ckpt])
    target = embeddings.map_path(embeddings.map_key(ckpt), 0, shipped=True)
    feats = [str(embeddings.features_path(embeddings.map_key(ckpt), split, shipped=True)) for split in ("test", "train")]

    def run(*flags):
        assert cli.main(["precompute-maps", *flags]) == 0
        return json.loads(capsys.readouterr().out)

    assert run() == {"written": [*feats, str(target)], "refused": []} and verify_map(target)
    assert np.load(feats[0]).shape == (len(load_demo("mnist").x_test), 8)
    assert np.load(feats[1]).shape == (len(load_demo("mnist").x_train), 8)
    assert run() == {"written": [], "refused": []} and len(fits) == 1  # a good map is kept
    assert run("--force")["written"] == [*feats, str(target)] and len(fits) == 2
    with open(target, "ab") as fh:
        fh.write(b"\0")
    out = run()
    assert out["written"] == [str(target)] and "sha256 does not match" in out["refused"][0] and verify_map(target)


def test_stored_features_equal_extracted_ones_and_a_wrong_file_is_recomputed(map_dirs, tmp_path):
    import torch

    from core.models import Classifier, default_config
    from core.models import extract_features

    torch.manual_seed(0)
    model = Classifier(default_config("mnist", "lgm", 4, arch="resnet", depth=1, width=8))
    images = load_demo("mnist").x_test[:20]
    fresh = extract_features(model, images).numpy()
    assert np.array_equal(embeddings.stored_features(model, images, "k", "test"), fresh)
    cached = embeddings.features_path("k", "test")
    assert np.array_equal(np.load(cached), fresh)  # computed once, then read back
    shipped = embeddings.features_path("k", "test", shipped=True)
    embeddings.save_features(np.ones((20, 4), np.float32), shipped)
    assert embeddings.stored_features(model, images, "k", "test").sum() == 80  # the shipped file wins
    embeddings.save_features(np.ones((19, 4), np.float32), shipped)  # wrong shape: not trusted
    assert np.array_equal(embeddings.stored_features(model, images, "k", "test"), fresh)
    for bad in (b"", b"not an npy file", np.lib.format.magic(1, 0)):  # empty, garbage, truncated header
        shipped.write_bytes(bad)
        cached.write_bytes(bad)
        assert np.array_equal(embeddings.stored_features(model, images, "k", "test"), fresh)  # recomputed
        assert np.array_equal(np.load(cached), fresh)  # and the broken cache file replaced
    shipped.unlink()
    np.save(cached, fresh.astype(np.float64))  # right shape, wrong type: recomputed as well
    assert embeddings.stored_features(model, images, "k", "test").dtype == np.float32


@pytest.mark.slow
def test_real_umap_refit_when_the_shipped_map_fails(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "SHIPPED_MAPS", tmp_path / "shipped")
    monkeypatch.setattr(embeddings, "CACHE_DIR", tmp_path / "cache")
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(c * 5.0, 1.0, (30, 8)) for c in range(2)]).astype(np.float32)
    target = embeddings.map_path("k", 0, shipped=True)
    target.parent.mkdir()
    target.write_bytes(b"not a map")  # no side file
    proj = fit_projection(feats, "umap", cache_key="k")
    assert "side file" in proj.problem
    pts = proj.transform(feats[:5])
    assert pts.shape == (5, 2) and np.isfinite(pts).all()
    assert verify_map(embeddings.map_path("k", 0))
