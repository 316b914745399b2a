"""The clean-label judge: a stand-in for the human labeller who checks the poisoned data set.

A poison is *clean-label* when a person would label it as its base class. No person looks at
thousands of poisons, so two independent judges stand in, and a poison counts as clean-label only
when both give it the base class:

- a **reference classifier** trained separately (``arch="convnet"``, its own seed: unlike every
  attacked model, and never shown to the attacker), shipped in ``checkpoints/judges/``;
- a **pixel-space k-NN vote** over the clean training set: what the image looks like, with no
  features at all. The poisons' own bases are left out of the vote (a poison sits within its
  budget of its base, so the base would always vote for itself).

The k-NN's reference set is whatever training split the caller has: the full data set in
experiments, the embedded sample in the dashboard (a weaker vote, stated in the verdict).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoints import CHECKPOINT_DIR, load_checkpoint
from .data import Dataset
from .models import Classifier, predict_logits, to_input

JUDGE_DIR = CHECKPOINT_DIR / "judges"
JUDGE_SEED = 1234  # no attacked model uses this seed
KNN_K = 5


def judge_path(dataset: str, folder: str | Path | None = None) -> Path:
    return Path(folder or JUDGE_DIR) / f"{dataset.replace('-', '_')}_judge.pt"


@dataclass
class Verdict:
    """The judges' labels for a batch of images and whether each is clean-label."""

    reference: np.ndarray  # int [N]: the reference classifier's label
    knn: np.ndarray  # int [N]: the pixel k-NN vote
    clean_label: np.ndarray  # bool [N]: both judges say the claimed (base) class

    @property
    def rate(self) -> float:
        return float(self.clean_label.mean()) if len(self.clean_label) else float("nan")

    def to_dict(self) -> dict:
        return {"reference": self.reference.tolist(), "knn": self.knn.tolist(),
                "clean_label": self.clean_label.tolist()}


def _flat(images: np.ndarray) -> torch.Tensor:
    """NHWC uint8 or float [0, 1] images as float rows in [0, 1]."""
    return to_input(images).flatten(1)


class Judge:
    """Reference classifier + pixel k-NN over ``x_ref`` (uint8 NHWC) with labels ``y_ref``."""

    def __init__(self, reference: Classifier, x_ref: np.ndarray, y_ref: np.ndarray, k: int = KNN_K,
                 class_ids: tuple[int, ...] | None = None) -> None:
        """``class_ids``: the labels here are a subset of the reference network's classes (a data set
        restricted to the victim's classes): label i is its class ``class_ids[i]``; any other class
        it names counts as none of them (-1), so a poison it calls a bird is never a clean-label dog."""
        if len(x_ref) <= k:
            raise ValueError("the k-NN judge needs more reference images than k")
        self.reference, self.x_ref, self.y_ref, self.k = reference.eval(), x_ref, np.asarray(y_ref), k
        self.class_ids = class_ids

    def knn_labels(self, images: np.ndarray, exclude: np.ndarray | None = None, chunk: int = 8192) -> np.ndarray:
        """Majority label of the k nearest reference images in pixel space (ties: the nearest's)."""
        q = _flat(images)
        best_d = torch.full((len(q), self.k), float("inf"))
        best_i = torch.zeros((len(q), self.k), dtype=torch.long)
        skip = np.zeros(len(self.x_ref), bool)
        if exclude is not None and len(exclude):
            skip[np.asarray(exclude, dtype=np.int64)] = True
        for start in range(0, len(self.x_ref), chunk):
            ref = _flat(self.x_ref[start:start + chunk])
            d = torch.cdist(q, ref)
            d[:, torch.from_numpy(skip[start:start + chunk])] = float("inf")
            d_all = torch.cat([best_d, d], 1)
            i_all = torch.cat([best_i, torch.arange(start, start + len(ref)).expand(len(q), -1)], 1)
            best_d, pos = d_all.topk(self.k, largest=False)
            best_i = i_all.gather(1, pos)
        votes = self.y_ref[best_i.numpy()]  # [N, k], nearest first
        n_classes = int(self.y_ref.max()) + 1
        counts = np.stack([np.bincount(v, minlength=n_classes) for v in votes]).astype(float)
        counts[np.arange(len(votes)), votes[:, 0]] += 0.5  # a tie goes to the nearest neighbour
        return counts.argmax(1)

    def reference_labels(self, images: np.ndarray) -> np.ndarray:
        full = predict_logits(self.reference, images).argmax(1).numpy()
        if self.class_ids is None:
            return full
        remap = np.full(int(self.reference.config.n_classes), -1, dtype=np.int64)
        remap[list(self.class_ids)] = np.arange(len(self.class_ids))
        return remap[full]

    def verdict(self, images: np.ndarray, claimed: np.ndarray | int, exclude: np.ndarray | None = None) -> Verdict:
        """Label ``images`` with both judges; clean-label where both say ``claimed``."""
        ref = self.reference_labels(images)
        knn = self.knn_labels(images, exclude)
        claimed = np.broadcast_to(np.asarray(claimed), ref.shape)
        return Verdict(reference=ref, knn=knn, clean_label=(ref == claimed) & (knn == claimed))


def load_judge(data: Dataset, folder: str | Path | None = None) -> Judge:
    """The shipped reference classifier for ``data``'s data set, voting with k-NN over its train split."""
    model, _ = load_checkpoint(judge_path(data.name, folder))
    return Judge(model, data.x_train, data.y_train, class_ids=data.class_ids)
