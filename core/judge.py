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

``JUDGES`` names the judges one may choose (``load_judge(data, name=...)``): ``reference`` is the one
above, for every data set. ``cifar10-new-classes`` is the judge calibrated for the CIFAR-10 victim
that learns classes its extractor never saw (``bench/judge_calibration.py``, REPRODUCTION section
1): the ConvNet and the full-task ResNet-20 pair (which the attacker, holding the split model,
never queried) vote by their mean probability after the image is re-encoded as JPEG q75, and there
is no k-NN vote (pixel 5-NN is a weak CIFAR-10 classifier, measured there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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
    knn: np.ndarray | None  # int [N]: the pixel k-NN vote (None: a judge without one)
    clean_label: np.ndarray  # bool [N]: every judge says the claimed (base) class

    @property
    def rate(self) -> float:
        return float(self.clean_label.mean()) if len(self.clean_label) else float("nan")

    def to_dict(self) -> dict:
        return {"reference": self.reference.tolist(), "knn": None if self.knn is None else self.knn.tolist(),
                "clean_label": self.clean_label.tolist()}


PURIFIERS = ("none", "median3", "jpeg75", "jpeg50")


def purify_images(images: np.ndarray, how: str = "none") -> np.ndarray:
    """Images as a judge sees them: ``median3`` replaces each pixel by the median of its 3x3
    neighbourhood per channel (it removes much of a small high-frequency perturbation and little of
    what a person reads); ``jpegQ`` re-encodes each image as JPEG at quality Q (Das et al. 2017; for
    a data set stored as JPEG, as the CIFAR-10 pack is at q75, it is also what the judge was trained
    on). Returns float NHWC in [0, 1] (uint8 in is scaled)."""
    if how not in PURIFIERS:
        raise ValueError(f"unknown purification {how!r}; one of {PURIFIERS}")
    if how.startswith("jpeg"):
        return _jpeg(images, int(how[4:]))
    x = to_input(images)  # NCHW float [0, 1]
    if how == "median3":
        n, c, h, w = x.shape
        patches = torch.nn.functional.unfold(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3)
        x = patches.view(n, c, 9, h * w).median(2).values.view(n, c, h, w)
    return x.permute(0, 2, 3, 1).numpy()


def _jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    import io

    from PIL import Image

    x = np.asarray(images)
    u8 = x if x.dtype == np.uint8 else np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    out = np.empty(u8.shape, np.float32)
    for i, img in enumerate(u8):
        buf = io.BytesIO()
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(buf, "JPEG", quality=quality)
        back = np.asarray(Image.open(io.BytesIO(buf.getvalue())), np.float32) / 255
        out[i] = back.reshape(img.shape)
    return out


def _flat(images: np.ndarray) -> torch.Tensor:
    """NHWC uint8 or float [0, 1] images as float rows in [0, 1]."""
    return to_input(images).flatten(1)


class Judge:
    """Reference classifier(s) + pixel k-NN over ``x_ref`` (uint8 NHWC) with labels ``y_ref``."""

    def __init__(self, reference: Classifier | Sequence[Classifier], x_ref: np.ndarray, y_ref: np.ndarray,
                 k: int = KNN_K, class_ids: tuple[int, ...] | None = None, purify: str = "none",
                 knn: bool = True) -> None:
        """``reference``: one network, or several that vote by their mean softmax probability (all
        over the same classes). ``purify``: how an image is cleaned before they see it
        (``PURIFIERS``). ``knn``: whether the pixel k-NN votes too. ``class_ids``: the labels here
        are a subset of the reference networks' classes (a data set restricted to the victim's
        classes): label i is their class ``class_ids[i]``; any other class they name counts as none
        of them (-1), so a poison they call a bird is never a clean-label dog."""
        if knn and len(x_ref) <= k:
            raise ValueError("the k-NN judge needs more reference images than k")
        members = [reference] if isinstance(reference, Classifier) else list(reference)
        if not members or len({int(m.config.n_classes) for m in members}) != 1:
            raise ValueError("a judge needs reference networks over the same classes")
        if purify not in PURIFIERS:
            raise ValueError(f"unknown purification {purify!r}; one of {PURIFIERS}")
        self.members = [m.eval() for m in members]
        self.x_ref, self.y_ref, self.k = x_ref, np.asarray(y_ref), k
        self.class_ids, self.purify, self.use_knn = class_ids, purify, knn

    @property
    def reference(self) -> Classifier:
        return self.members[0]

    @property
    def who(self) -> str:
        """Who judges, for a sentence: "the reference network and the nearest training images"."""
        nets = "the reference network" if len(self.members) == 1 else f"{len(self.members)} reference networks"
        if self.purify.startswith("jpeg"):
            nets += f" (after a JPEG re-encode at quality {self.purify[4:]})"
        elif self.purify == "median3":
            nets += " (after a 3x3 median filter)"
        return f"{nets} and the nearest training images" if self.use_knn else nets

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
        """The reference networks' call: the argmax of their mean probability on the purified image."""
        x = purify_images(images, self.purify) if self.purify != "none" else images
        if len(self.members) == 1:
            full = predict_logits(self.members[0], x).argmax(1).numpy()
        else:
            full = torch.stack([predict_logits(m, x).softmax(1) for m in self.members]).mean(0).argmax(1).numpy()
        if self.class_ids is None:
            return full
        remap = np.full(int(self.members[0].config.n_classes), -1, dtype=np.int64)
        remap[list(self.class_ids)] = np.arange(len(self.class_ids))
        return remap[full]

    def verdict(self, images: np.ndarray, claimed: np.ndarray | int, exclude: np.ndarray | None = None) -> Verdict:
        """Label ``images`` with every judge; clean-label where all of them say ``claimed``."""
        ref = self.reference_labels(images)
        knn = self.knn_labels(images, exclude) if self.use_knn else None
        claimed = np.broadcast_to(np.asarray(claimed), ref.shape)
        clean = (ref == claimed) & (knn == claimed) if knn is not None else ref == claimed
        return Verdict(reference=ref, knn=knn, clean_label=clean)


@dataclass(frozen=True)
class JudgeSpec:
    """A judge one may choose: its reference networks (checkpoint files under ``checkpoints/``;
    ``{judge}`` is the data set's shipped judge), the purification and whether k-NN votes."""

    name: str
    members: tuple[str, ...] = ("{judge}",)
    purify: str = "none"
    knn: bool = True
    datasets: tuple[str, ...] | None = None  # None: every data set
    # only for a victim restricted to classes its extractor never saw: its members include the
    # full-task models, which are the attacked ones everywhere else
    new_classes_only: bool = False
    why: str = ""


JUDGES: dict[str, JudgeSpec] = {s.name: s for s in (
    JudgeSpec("reference", why="the data set's ConvNet and the pixel 5-NN vote (section 1)"),
    JudgeSpec("cifar10-seen", ("{judge}",), "jpeg75", knn=False, datasets=("cifar10",),
              why="the ConvNet alone after JPEG q75: the best measured for the full task (81.3%, section 1); the "
                  "pixel 5-NN names 37% of test images and, over the embedded sample, accepts 4-43 of a class's 100"),
    JudgeSpec("cifar10-new-classes", ("{judge}", "cifar10_softmax_d128.pt", "cifar10_lgm_d128.pt"), "jpeg75",
              knn=False, datasets=("cifar10",), new_classes_only=True,
              why="for a victim of the split models: the ConvNet and the full-task d = 128 pair (never queried by "
                  "an attacker holding the split model) after JPEG q75; calibrated in bench/judge_calibration.py"),
)}


def load_judge(data: Dataset, folder: str | Path | None = None, name: str = "reference") -> Judge:
    """Judge ``name`` (``JUDGES``) for ``data``'s data set, its k-NN voting over ``data``'s train split.
    ``folder``: where the data set's own judge network lies (default ``checkpoints/judges``)."""
    spec = JUDGES.get(name)
    if spec is None:
        raise ValueError(f"unknown judge {name!r}; one of {sorted(JUDGES)}")
    if spec.datasets is not None and data.name not in spec.datasets:
        raise ValueError(f"the {name} judge is for {', '.join(spec.datasets)}, not {data.name}")
    if spec.new_classes_only and data.class_ids is None:
        raise ValueError(f"the {name} judge votes with the full-task models, which an attacker of the whole data set "
                         "attacks: it is only for a victim of classes the attacked model never saw")
    members = [load_checkpoint(judge_path(data.name, folder) if m == "{judge}" else CHECKPOINT_DIR / m)[0]
               for m in spec.members]
    return Judge(members, data.x_train, data.y_train, class_ids=data.class_ids, purify=spec.purify, knn=spec.knn)


# The judge a data set gets where nobody names one: the dashboard and the CLI's single trials. On
# CIFAR-10 the k-NN vote over the embedded sample's 1000 images accepts 4 to 43 of a class's 100
# training images (cats 4), so most base classes could not be drawn at all; there the ConvNet
# after JPEG judges alone. Experiments keep the judge their config names (``reference``), so a
# shipped grid resumes with the judge it began with.
DEFAULT_JUDGES = {"cifar10": "cifar10-seen"}


def default_judge(data: Dataset, folder: str | Path | None = None) -> Judge:
    """``load_judge`` with the data set's default judge (``DEFAULT_JUDGES``, else ``reference``)."""
    return load_judge(data, folder, DEFAULT_JUDGES.get(data.name, "reference"))
