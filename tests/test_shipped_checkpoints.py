"""Every shipped checkpoint loads (hash-checked, weights-only) and still has its recorded accuracy."""

import pytest

from core.checkpoints import list_checkpoints, load_checkpoint
from core.data import default_data_dir, load_dataset
from core.train import accuracy

SHIPPED = list_checkpoints()


def test_checkpoints_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {f"{d}_{h}_d{k}" for d in ("mnist", "fashion_mnist") for h in ("softmax", "lgm") for k in (2, 64)} <= names
    assert {f"cifar10_{h}_d{k}" for h in ("softmax", "lgm") for k in (2, 128)} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoint_accuracy(path):
    model, meta = load_checkpoint(path)
    assert path.stat().st_size < 20 * 2**20
    if default_data_dir() is None:
        pytest.skip("set POISONLAB_DATA_DIR to check accuracy on the full test set")
    data = load_dataset(meta["config"]["dataset"], download=False)
    acc = accuracy(model, data.x_test, data.y_test)
    assert abs(acc - meta["test_accuracy"]) <= 0.01


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_checkpoint_ships_its_demo_features(path):
    """A retrained checkpoint needs `poisonlab precompute-maps` again: without its features the
    dashboard's cold start and every lab run would extract them while a user waits."""
    import numpy as np

    from core.data import load_demo
    from core.embeddings import features_path, map_key
    from core.models import extract_features

    model, meta = load_checkpoint(path)
    demo = load_demo(meta["config"]["dataset"])
    for split, images in (("test", demo.x_test), ("train", demo.x_train)):
        shipped = features_path(map_key(path), split, shipped=True)
        assert shipped.is_file(), f"{shipped.name} missing: run `poisonlab precompute-maps`"
        feats = np.load(shipped, allow_pickle=False)
        assert feats.shape == (len(images), meta["config"]["feat_dim"]) and feats.dtype == np.float32
        assert np.allclose(feats[:64], extract_features(model, images[:64]).numpy(), atol=1e-4), split


def test_cifar10_pairs_share_one_backbone():
    """The 2-D CIFAR pair is the d = 128 backbone with a 2-D bottleneck, so the two spaces compare."""
    configs = {p.stem: load_checkpoint(p)[1]["config"] for p in SHIPPED if p.stem.startswith("cifar10_")}
    backbone = {name: (c["arch"], c["depth"], c["width"]) for name, c in configs.items()}
    assert len(set(backbone.values())) == 1, backbone
    assert {c["feat_dim"] for c in configs.values()} == {2, 128}
