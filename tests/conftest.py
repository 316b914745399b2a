"""Shared fixtures: tiny datasets written in torchvision's real on-disk formats, tiny models."""

from __future__ import annotations

import gzip
import os
import tempfile
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

# red-team rounds go to a throwaway database, never the user's (core.rounds.default_db_path)
os.environ.setdefault("POISONLAB_WARM_UP", "0")  # AppTests fill only what they visit (tests/test_warm.py warms)
os.environ.setdefault("POISONLAB_ROUNDS_DB", os.path.join(tempfile.mkdtemp(prefix="poisonlab-rounds-"), "rounds.sqlite"))

from core.data import load_demo  # noqa: E402
from core.models import Classifier, default_config  # noqa: E402
from core.train import TrainConfig, fit  # noqa: E402


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write an unsigned-byte IDX file exactly as the MNIST distribution does."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}i", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if compress else raw)


def write_mnist_layout(root: Path, folder: str = "MNIST", n_train: int = 30, n_test: int = 10,
                       compress: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
              "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, n_test).astype(np.uint8)}
    names = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    for key, stem in names.items():
        write_idx(root / folder / "raw" / (stem + (".gz" if compress else "")), arrays[key], compress)
    return arrays


def write_cifar_layout(root: Path, per_batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Pickled batches in the layout of cifar-10-python.tar.gz (data rows are CHW-flattened)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({"batch_label": name, "labels": labels, "data": data,
                         "filenames": [f"{i}.png" for i in range(per_batch)]}, fh)
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.array(labels))
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": ["x"] * 10}, fh)
    return {"x_train": np.concatenate(xs[:5]), "y_train": np.concatenate(ys[:5]),
            "x_test": xs[5], "y_test": ys[5]}


@pytest.fixture(scope="session")
def mnist_demo():
    return load_demo("mnist")


@pytest.fixture(scope="session")
def tiny_lgm(mnist_demo):
    """A small LGM model trained briefly on the demo sample (shared, read-only)."""
    torch.manual_seed(0)
    model = Classifier(default_config("mnist", "lgm", 8))
    fit(model, mnist_demo.x_train[:600], mnist_demo.y_train[:600], TrainConfig(epochs=1, lr=0.05, seed=0),
        progress=False)
    return model
