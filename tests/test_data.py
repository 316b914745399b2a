"""Data sources: npz packs, torchvision's real on-disk formats, the demo sample, clear errors."""

from pathlib import Path

import numpy as np
import pytest

from core import data as data_mod
from core.data import DataUnavailable, load_dataset, load_demo, read_idx, write_demo
from tests.conftest import write_cifar_layout, write_mnist_layout


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_torchvision_layout(tmp_path, compress):
    arrays = write_mnist_layout(tmp_path, compress=compress)
    ds = load_dataset("mnist", tmp_path, download=False)
    assert ds.x_train.shape == (30, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert np.array_equal(ds.x_train[..., 0], arrays["x_train"])
    assert np.array_equal(ds.y_test, arrays["y_test"].astype(np.int64))
    assert ds.classes[3] == "3"


def test_fashion_mnist_torchvision_layout(tmp_path):
    arrays = write_mnist_layout(tmp_path, folder="FashionMNIST", compress=True)
    ds = load_dataset("fashion-mnist", tmp_path, download=False)
    assert np.array_equal(ds.x_test[..., 0], arrays["x_test"])
    assert ds.classes[9] == "Ankle boot"


def test_idx_files_flat_in_folder(tmp_path):
    """Debian's dataset-fashion-mnist puts the four .gz files directly in one folder."""
    arrays = write_mnist_layout(tmp_path / "x", compress=True)
    flat = tmp_path / "flat"
    (tmp_path / "x" / "MNIST" / "raw").rename(flat)
    ds = load_dataset("fashion-mnist", flat, download=False)
    assert np.array_equal(ds.y_train, arrays["y_train"].astype(np.int64))


def test_system_package_folder_is_a_source(tmp_path, monkeypatch):
    """A data directory without Fashion-MNIST still finds Debian's installed files (flat IDX .gz),
    and when that package is absent the error names the folder it looked in."""
    arrays = write_mnist_layout(tmp_path / "x", compress=True)
    monkeypatch.setitem(data_mod.SYSTEM_DIRS, "fashion-mnist", tmp_path / "x" / "MNIST" / "raw")
    (tmp_path / "packs").mkdir()
    ds = load_dataset("fashion-mnist", tmp_path / "packs", download=False)
    assert np.array_equal(ds.x_test[..., 0], arrays["x_test"]) and ds.x_test.flags.writeable
    monkeypatch.setitem(data_mod.SYSTEM_DIRS, "fashion-mnist", tmp_path / "absent")
    with pytest.raises(DataUnavailable, match="absent.*not installed"):
        load_dataset("fashion-mnist", tmp_path / "packs", download=False)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Debian package absent")
def test_real_fashion_mnist_files():
    ds = load_dataset("fashion-mnist", "/usr/share/datasets/fashion-mnist", download=False)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.y_test).tolist() == [1000] * 10


def test_cifar_torchvision_layout(tmp_path):
    arrays = write_cifar_layout(tmp_path)
    ds = load_dataset("cifar10", tmp_path, download=False)
    assert ds.x_train.shape == (20, 32, 32, 3)
    assert np.array_equal(ds.x_train, arrays["x_train"])
    assert np.array_equal(ds.y_test, arrays["y_test"])


def test_cifar_batch_refuses_code(tmp_path):
    import pickle

    write_cifar_layout(tmp_path)

    class Evil:
        def __reduce__(self):
            return (Path("/").joinpath, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({"data": Evil(), "labels": []}, fh)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_dataset("cifar10", tmp_path, download=False)


def test_npz_pack(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 255, (5, 28, 28), dtype=np.uint8),
             y_train=np.arange(5), x_test=rng.integers(0, 255, (3, 28, 28), dtype=np.uint8), y_test=np.arange(3))
    ds = load_dataset("mnist", tmp_path, download=False)
    assert ds.x_train.shape == (5, 28, 28, 1) and ds.source.endswith("mnist.npz")


def test_env_variable_is_the_default(tmp_path, monkeypatch):
    write_mnist_layout(tmp_path)
    monkeypatch.setenv(data_mod.DATA_DIR_ENV, str(tmp_path))
    assert load_dataset("mnist", download=False).x_test.shape[0] == 10


def test_truncated_idx_is_clear(tmp_path):
    write_mnist_layout(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataUnavailable, match="truncated"):
        read_idx(path)


def test_nothing_found_names_what_was_tried(tmp_path, monkeypatch):
    def offline(name, root):
        raise OSError("network unreachable")

    monkeypatch.setattr(data_mod, "_download", offline)
    with pytest.raises(DataUnavailable) as err:
        load_dataset("cifar10", tmp_path / "nowhere")
    msg = str(err.value)
    assert "does not exist" in msg and "network unreachable" in msg and "--demo" in msg


def test_download_path_uses_torchvision_then_reads_files(tmp_path, monkeypatch):
    """The online path: torchvision's dataset class is asked to download into the data folder."""
    import torchvision.datasets as tvd

    calls = []

    def fake_mnist(root, train, download):
        calls.append((root, train, download))
        if not (Path(root) / "MNIST").exists():
            write_mnist_layout(Path(root))

    monkeypatch.setattr(tvd, "MNIST", fake_mnist)
    ds = load_dataset("mnist", tmp_path / "new")
    assert calls == [(str(tmp_path / "new"), True, True), (str(tmp_path / "new"), False, True)]
    assert ds.x_train.shape[0] == 30


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_demo_samples_ship_and_are_stratified():
    for name, shape in [("mnist", (28, 28, 1)), ("fashion-mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))]:
        ds = load_demo(name)
        assert ds.image_shape == shape
        counts = np.bincount(ds.y_test, minlength=10)
        assert counts.min() == counts.max() > 0


def test_write_demo_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (100, 28, 28, 1), dtype=np.uint8)
    y = np.repeat(np.arange(10), 10)
    ds = data_mod.Dataset("mnist", x, y, x[:50], y[:50], tuple("0123456789"), "mem")
    path = write_demo(ds, 3, 2, seed=0, path=tmp_path / "d.npz")
    back = data_mod._read_npz("mnist", path)
    assert np.bincount(back.y_train).tolist() == [3] * 10
    assert np.bincount(back.y_test).tolist() == [2] * 5  # the test split holds classes 0-4
    assert not np.array_equal(back.y_train, np.sort(back.y_train))  # shuffled: a prefix is mixed
    again = data_mod._read_npz("mnist", write_demo(ds, 3, 2, seed=0, path=tmp_path / "e.npz"))
    assert np.array_equal(again.x_train, back.x_train)  # seeded


def test_class_split_halves_are_disjoint_seeded_and_cover_every_class():
    pre, vic = data_mod.class_split("cifar10", 0)
    assert len(pre) == len(vic) == 5 and set(pre) | set(vic) == set(range(10)) and not set(pre) & set(vic)
    assert data_mod.class_split("cifar10", 0) == (pre, vic)
    assert data_mod.class_split("cifar10", 1) != (pre, vic)
    assert pre == (2, 3, 4, 6, 7)  # the shipped new-classes pair was trained on these


def test_restrict_keeps_only_those_classes_relabelled_in_order():
    demo = load_demo("mnist")
    sub = demo.restrict([7, 2])
    assert sub.classes == ("7", "2") and set(np.unique(sub.y_train)) == {0, 1}
    assert len(sub.y_test) == int(np.isin(demo.y_test, [7, 2]).sum())
    first7 = np.flatnonzero(demo.y_train == 7)[0]
    assert np.array_equal(sub.x_train[sub.y_train == 0][0], demo.x_train[first7])
    with pytest.raises(ValueError):
        demo.restrict([1, 1])
