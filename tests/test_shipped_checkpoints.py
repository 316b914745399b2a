"""Every shipped checkpoint loads (hash-checked, weights-only) and still has its recorded accuracy."""

import pytest

from core.checkpoints import list_checkpoints, load_checkpoint
from core.data import default_data_dir, load_dataset
from core.train import accuracy

SHIPPED = list_checkpoints()


def test_checkpoints_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {"mnist_softmax_d2", "mnist_lgm_d2", "mnist_softmax_d64", "mnist_lgm_d64"} <= names


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
