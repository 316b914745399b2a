"""Checkpoints: a ``state_dict`` file plus a JSON side file, loaded without trusting pickle.

``NAME.pt`` holds only tensors (``torch.save(model.state_dict())``); ``NAME.json`` holds the
architecture, hyper-parameters, seed, train time, test accuracy and the sha256 of ``NAME.pt``.
Loading checks the hash first, then uses ``torch.load(weights_only=True)``, so a tampered or
malicious file is refused before any of it is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from .models import Classifier, ModelConfig

PROJECT_DIR = Path(__file__).resolve().parent.parent
# the shipped checkpoints; POISONLAB_CHECKPOINTS points the dashboard at another folder
CHECKPOINT_DIR = Path(os.environ.get("POISONLAB_CHECKPOINTS", Path(__file__).resolve().parent.parent / "checkpoints"))


# The shipped model suite per dataset: (head, feature dimension). Every model of a suite shares
# one backbone and one recipe, so softmax and LGM differ in the head alone. The one list of them.
SUITES = {"cifar10": [("lgm", 128), ("softmax", 128), ("lgm", 2), ("softmax", 2)],
          "fashion-mnist": [("lgm", 64), ("softmax", 64), ("lgm", 2), ("softmax", 2)],
          "mnist": [("lgm", 64), ("softmax", 64), ("lgm", 2), ("softmax", 2)]}


def shipped_name(dataset: str, head: str, feat_dim: int) -> str:
    """A suite model's checkpoint name: cifar10_lgm_d128."""
    return f"{dataset.replace('-', '_')}_{head}_d{feat_dim}"


def shipped_pair(dataset: str, high_d: bool = True) -> tuple[str, str]:
    """(softmax, LGM) checkpoint names of a data set's high-d (or 2-D) pair, as shipped."""
    dims = {d for _, d in SUITES[dataset] if (d > 2) == high_d}
    (dim,) = dims
    return shipped_name(dataset, "softmax", dim), shipped_name(dataset, "lgm", dim)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, tampered with or does not fit its description."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def locate(path: str | Path) -> Path:
    """``path`` as given, or, when it is relative and not found from the working folder, the same
    path under the project's folder: shipped results and galleries name their checkpoints relative
    to the repository, and ``streamlit run /somewhere/app.py`` may start from any folder."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    in_project = PROJECT_DIR / path
    return in_project if in_project.exists() else path


def side_file(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_checkpoint(model: Classifier, path: str | Path, meta: dict) -> Path:
    """Write weights and the side file; ``meta`` adds training facts (seed, time, accuracy...)."""
    path = Path(path).with_suffix(".pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    info = {"config": model.config.to_dict(), **meta, "sha256": sha256_file(path), "weights": path.name}
    side_file(path).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def read_meta(path: str | Path) -> dict:
    """The side file of a checkpoint, validated enough to rebuild the model."""
    meta_path = side_file(locate(Path(path).with_suffix(".pt")))
    try:
        meta = json.loads(meta_path.read_text())
        ModelConfig(**meta["config"])
    except FileNotFoundError:
        raise CheckpointError(f"{meta_path}: side file missing (every checkpoint needs NAME.json)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable side file ({exc})") from None
    return meta


def verify_checkpoint(path: str | Path, verify_hash: bool = True) -> dict:
    """The side file of an existing checkpoint whose weights match its recorded sha256."""
    path = locate(Path(path).with_suffix(".pt"))
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    meta = read_meta(path)
    if verify_hash and sha256_file(path) != meta.get("sha256"):
        raise CheckpointError(f"{path}: sha256 does not match {side_file(path).name}; the file was "
                              "changed or truncated, refusing to load it")
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    verify_hash: bool = True) -> tuple[Classifier, dict]:
    """Rebuild the model and load its weights; returns ``(model in eval mode, side-file dict)``."""
    path = locate(Path(path).with_suffix(".pt"))
    meta = verify_checkpoint(path, verify_hash)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the file is unusable
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    model = Classifier(ModelConfig(**meta["config"]))
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the architecture in its side file ({exc})") from None
    return model.to(device).eval(), meta


def list_checkpoints(folder: str | Path | None = None) -> list[Path]:
    """Every ``*.pt`` with a side file in ``folder`` (default: ``CHECKPOINT_DIR``), sorted by name."""
    return sorted(p for p in Path(folder or CHECKPOINT_DIR).glob("*.pt") if side_file(p).is_file())
