"""Datasets as plain uint8 arrays, from whatever source this machine has.

Images are always uint8 ``[N, H, W, C]`` (C = 1 for the MNIST family, 3 for CIFAR-10) and labels
int64 ``[N]``; models convert to float in [0, 1] themselves, so attacks work in pixel space.

Sources are tried in this order (``load_dataset``):

1. the data directory (``--data-dir`` or the ``POISONLAB_DATA_DIR`` environment variable), holding
   either an ``.npz`` pack (``mnist.npz``, ``fashion-mnist.npz``, ``cifar10.npz`` with
   ``x_train, y_train, x_test, y_test``) or torchvision's on-disk layout
   (``MNIST/raw/*-ubyte[.gz]``, ``FashionMNIST/raw/...``, ``cifar-10-batches-py/``), or the four
   IDX files flat in the directory (Debian's ``dataset-fashion-mnist`` layout);
2. a system package's folder (``SYSTEM_DIRS``: Debian's ``dataset-fashion-mnist`` installs the
   real Fashion-MNIST files in ``/usr/share/datasets/fashion-mnist``);
3. torchvision's download into the data directory (or ``~/.cache/poisonlab``) when online.

``load_demo`` reads the small embedded sample shipped in ``checkpoints/demo/`` and needs nothing.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "POISONLAB_DATA_DIR"
DATASETS = ("mnist", "fashion-mnist", "cifar10")
DEMO_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "demo"

CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer",
                "dog", "frog", "horse", "ship", "truck"],
}
_TV_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
# Folders that operating-system packages install data sets into (read-only, flat IDX files).
SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}
_IDX_FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
              "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


class DataUnavailable(RuntimeError):
    """No source could provide the dataset; the message says what was tried and how to fix it."""


@dataclass(frozen=True)
class Dataset:
    """A dataset split into train and test, uint8 NHWC images and int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str
    # after ``restrict``: the kept classes' ids in the full data set (label i here is class_ids[i] there)
    class_ids: tuple[int, ...] | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def restrict(self, class_ids: tuple[int, ...] | list[int]) -> "Dataset":
        """Only the images of ``class_ids``, relabelled 0..k-1 in that order (names follow).

        ``source`` stays the file it came from (its sha256 is what a checkpoint records); which
        classes were kept is the caller's to record."""
        ids = [int(c) for c in class_ids]
        if len(set(ids)) != len(ids) or not ids or min(ids) < 0 or max(ids) >= len(self.classes):
            raise ValueError(f"class ids must be distinct and in 0..{len(self.classes) - 1}, got {ids}")
        remap = np.full(len(self.classes), -1, dtype=np.int64)
        remap[ids] = np.arange(len(ids))
        keep_tr, keep_te = np.isin(self.y_train, ids), np.isin(self.y_test, ids)
        full = tuple(self.class_ids[c] for c in ids) if self.class_ids is not None else tuple(ids)
        return Dataset(name=self.name, x_train=self.x_train[keep_tr], y_train=remap[self.y_train[keep_tr]],
                       x_test=self.x_test[keep_te], y_test=remap[self.y_test[keep_te]],
                       classes=tuple(self.classes[c] for c in ids), source=self.source, class_ids=full)


def class_split(name: str, seed: int = 0) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A seeded half of a data set's classes to pretrain an extractor on, and the other half for
    the victim's task.

    The poisoning benchmark's transfer victims sit on an extractor pretrained on CIFAR-100, which
    never saw the victim's ten classes; no CIFAR-100 can be had here, so the split emulates that
    inside one data set. Seed 0 on CIFAR-10: pretrain on bird, cat, deer, frog, horse; the victim
    learns airplane, automobile, dog, ship, truck."""
    n = len(CLASSES[_check_name(name)])
    order = np.random.default_rng(seed).permutation(n)
    return tuple(sorted(int(c) for c in order[:n // 2])), tuple(sorted(int(c) for c in order[n // 2:]))


def default_data_dir() -> Path | None:
    value = os.environ.get(DATA_DIR_ENV)
    return Path(value).expanduser() if value else None


def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name


def _normalise(name: str, arrays: dict[str, np.ndarray], source: str) -> Dataset:
    """Validate shapes and bring images to NHWC uint8 so every source looks the same."""
    out = {}
    for split in ("train", "test"):
        x = np.asarray(arrays[f"x_{split}"])
        y = np.asarray(arrays[f"y_{split}"]).astype(np.int64).reshape(-1)
        if x.dtype != np.uint8:
            raise DataUnavailable(f"{source}: x_{split} must be uint8, got {x.dtype}")
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or len(x) != len(y):
            raise DataUnavailable(f"{source}: x_{split} has shape {x.shape}, labels {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= len(CLASSES[name])):
            raise DataUnavailable(f"{source}: labels outside 0..{len(CLASSES[name]) - 1}")
        out[f"x_{split}"], out[f"y_{split}"] = np.ascontiguousarray(x), y
    expected = (32, 32, 3) if name == "cifar10" else (28, 28, 1)
    if out["x_train"].shape[1:] != expected:
        raise DataUnavailable(f"{source}: images are {out['x_train'].shape[1:]}, expected {expected}")
    return Dataset(name=name, classes=tuple(CLASSES[name]), source=source, **out)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataUnavailable(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataUnavailable(f"{path}: truncated IDX file ({data.size} of {np.prod(dims)} bytes)")
    return data.reshape(tuple(dims)).copy()  # writable, as every other source's arrays are


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_folder(name: str, folder: Path) -> Dataset | None:
    paths = {key: _find_idx(folder, stem) for key, stem in _IDX_FILES.items()}
    if not all(paths.values()):
        return None
    return _normalise(name, {k: read_idx(p) for k, p in paths.items()}, str(folder))  # type: ignore[arg-type]


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only what a numpy array needs, so a file cannot run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle protocol
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = _ArrayOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    return data, labels


def _read_cifar_folder(folder: Path) -> Dataset | None:
    train = [folder / f"data_batch_{i}" for i in range(1, 6)]
    test = folder / "test_batch"
    if not all(p.is_file() for p in train + [test]):
        return None
    parts = [_read_cifar_batch(p) for p in train]
    x_test, y_test = _read_cifar_batch(test)
    arrays = {"x_train": np.concatenate([p[0] for p in parts]),
              "y_train": np.concatenate([p[1] for p in parts]), "x_test": x_test, "y_test": y_test}
    return _normalise("cifar10", arrays, str(folder))


def _read_npz(name: str, path: Path) -> Dataset:
    with np.load(path, allow_pickle=False) as pack:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(pack.files)
        if missing:
            raise DataUnavailable(f"{path}: missing arrays {sorted(missing)}")
        return _normalise(name, {k: pack[k] for k in ("x_train", "y_train", "x_test", "y_test")}, str(path))


def _from_directory(name: str, root: Path) -> Dataset | None:
    for stem in {name, name.replace("-", "_"), name.replace("-", "")}:
        if (root / f"{stem}.npz").is_file():
            return _read_npz(name, root / f"{stem}.npz")
    if name == "cifar10":
        return _read_cifar_folder(root / "cifar-10-batches-py")
    return _read_idx_folder(name, root / _TV_FOLDER[name] / "raw") or _read_idx_folder(name, root)


def _download(name: str, root: Path) -> Dataset | None:
    """Fetch through torchvision (the canonical files), then read them with the readers above."""
    import torchvision.datasets as tvd  # only for a download: importing torchvision costs seconds

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    root.mkdir(parents=True, exist_ok=True)
    cls(root=str(root), train=True, download=True)
    cls(root=str(root), train=False, download=True)
    return _from_directory(name, root)


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True) -> Dataset:
    """Load a full dataset from the first source that has it (see the module docstring)."""
    _check_name(name)
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    tried = []
    if root is not None:
        found = _from_directory(name, root) if root.is_dir() else None
        if found is not None:
            return found
        tried.append(f"data directory {root} ({'no matching files' if root.is_dir() else 'does not exist'})")
    else:
        tried.append(f"no data directory (set {DATA_DIR_ENV} or pass --data-dir)")
    system = SYSTEM_DIRS.get(name)
    if system is not None:
        found = _read_idx_folder(name, system) if system.is_dir() else None
        if found is not None:
            return found
        tried.append(f"system folder {system} ({'incomplete' if system.is_dir() else 'not installed'})")
    if download:
        target = root or Path("~/.cache/poisonlab").expanduser()
        try:
            found = _download(name, target)
            if found is not None:
                return found
            tried.append(f"torchvision download into {target} (files not found afterwards)")
        except Exception as exc:  # noqa: BLE001 - any network/IO failure is reported together below
            tried.append(f"torchvision download into {target} ({type(exc).__name__}: {exc})")
    raise DataUnavailable(
        f"could not load {name!r}. Tried: " + "; ".join(tried) + ". Fix: point "
        f"{DATA_DIR_ENV} (or --data-dir) at a folder with {name}.npz or torchvision's files, "
        "go online for the download, or use the embedded demo sample (--demo).")


def demo_path(name: str) -> Path:
    return DEMO_DIR / f"{_check_name(name)}.npz"


def load_demo(name: str) -> Dataset:
    """The small sample shipped with the checkpoints: enough for the dashboard, no download."""
    path = demo_path(name)
    if not path.is_file():
        raise DataUnavailable(f"no embedded demo sample for {name!r} at {path}")
    return _read_npz(name, path)


def stratified_sample(labels: np.ndarray, n: int, rng: np.random.Generator,
                      exclude: np.ndarray | None = None) -> np.ndarray:
    """``n`` indices spread evenly over the classes present (sorted), none of ``exclude``."""
    pool = np.setdiff1d(np.arange(len(labels)), exclude) if exclude is not None else np.arange(len(labels))
    classes = np.unique(labels[pool])
    share = np.full(len(classes), n // len(classes))
    share[:n % len(classes)] += 1
    picks = []
    for c, m in zip(classes, share):
        members = pool[labels[pool] == c]
        picks.append(rng.choice(members, min(m, len(members)), replace=False))
    return np.sort(np.concatenate(picks))


def write_demo(dataset: Dataset, train_per_class: int, test_per_class: int, seed: int = 0,
               path: Path | None = None) -> Path:
    """Write the embedded sample: a stratified subset of both splits, shuffled (so a prefix of it is
    still a mixed sample), compressed. (The shipped samples were drawn by an earlier per-class
    sampler: a rebuild has the same class counts, not the same images.)"""
    def draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.permutation(stratified_sample(labels, per_class * len(np.unique(labels)), rng))

    itr = draw(dataset.y_train, train_per_class, seed)
    ite = draw(dataset.y_test, test_per_class, seed + 1)
    path = path or demo_path(dataset.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x_train=dataset.x_train[itr], y_train=dataset.y_train[itr],
                        x_test=dataset.x_test[ite], y_test=dataset.y_test[ite],
                        train_index=itr, test_index=ite)
    return path
