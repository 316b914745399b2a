"""Victim retraining: does a model trained on clean data plus the poisons misclassify the target?

Two settings, as in the poisoning benchmarks:

- ``transfer``: the feature extractor is frozen and only the head is retrained (softmax: the
  linear layer; LGM: the class means and variances). Features are computed once, so this is fast.
- ``end2end``: the whole network is fine-tuned for a few epochs on the clean subset plus poisons.

How a transfer victim's head is refitted is a registry entry of ``VICTIM_HEADS`` (its fitting
function and its own settings dataclass); ``Retraining`` says which victim a trial retrains: the
setting, the head, its settings and the seed. Adding a victim head is one entry and its test.

The shared model is never changed: the victim is always a deep copy (the dashboard serves one
cached model to many users at once).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch

from .attacks import Poisons
from .models import Classifier, extract_features, frozen_copy, to_input
from .settings import NoSettings, Settings, knob
from .lgm import FittedGaussians, SoftmaxHead
from .train import TrainConfig, augment_batch, fit

SETTINGS = ("transfer", "end2end")


@dataclass
class Outcome:
    """What happened to the target, and what it cost the victim."""

    setting: str
    success: bool  # the retrained victim calls the target the base class
    target_label: int
    base_label: int
    pred_before: int
    pred_after: int
    probs_before: list[float]
    probs_after: list[float]
    clean_acc_before: float
    clean_acc_after: float
    n_poisons: int
    n_clean: int
    poison_l2: list[float]
    poison_linf: list[float]
    feature_distance: list[float]  # ||f(poison) - f(target)|| under the victim's starting model

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class WarmHeadSettings(Settings):
    """The lab's first victim: the trained head, warm-started, refitted by full-batch Adam."""

    steps: int = knob(1000, "full-batch Adam steps (at most)", 1, 1_000_000)
    lr: float = knob(0.01, "Adam step", 1e-8, 10.0)
    weight_decay: float = knob(0.0, "L2 on the head's weights (the regularised softmax victim)", 0.0, 100.0)
    tol: float = knob(1e-5, "stop once the loss changed by less than this (relative) over 50 steps", 0.0, 1.0)


def retrain_head(head: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor,
                 settings: WarmHeadSettings | None = None, seed: int = 0) -> torch.nn.Module:
    """Fine-tune a copy of a head on fixed features (full batch, Adam); returns the copy.

    Stops early once the loss has changed by less than ``tol`` (relative) over 50 steps: the head
    no longer moves, and the remaining steps would only cost time. ``weight_decay`` (L2 on the
    softmax weights) gives the regularised softmax victim of the dose-response benchmark.
    """
    s = settings or WarmHeadSettings()
    torch.manual_seed(seed)
    head = copy.deepcopy(head).train()
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=s.lr)
    weights = [p for n, p in head.named_parameters() if n.endswith("weight")]
    last = None
    for step in range(s.steps):
        loss = head.loss(feats, labels)
        if s.weight_decay:
            loss = loss + 0.5 * s.weight_decay * sum(w.pow(2).sum() for w in weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 49:
            value = float(loss.detach())
            if last is not None and abs(last - value) <= s.tol * max(abs(last), 1e-12):
                break
            last = value
    return head.eval()


@dataclass(frozen=True)
class HeadData:
    """What a transfer victim's head is refitted on: the frozen extractor's features of the
    retraining images (clean plus kept poisons) and their labels; for a head trained with
    augmentation, the images themselves and the frozen extractor (float NCHW -> features)."""

    feats: torch.Tensor
    labels: torch.Tensor
    images: np.ndarray | None = None  # float32 NHWC in [0, 1]
    extract: Callable[[torch.Tensor], torch.Tensor] | None = None
    n_classes: int | None = None  # the victim's classes (default: the model head's)


@dataclass(frozen=True)
class LinearHeadSettings(Settings):
    """The poisoning benchmark's transfer victim (``poison_test.py``, ``benchmark_test.py``): a new
    linear layer on the frozen extractor, SGD with momentum 0.9, the lr cut by ``gamma`` at each
    milestone, batch norm in eval mode, optionally random crop + flip through the extractor."""

    epochs: int = knob(40, "epochs over the retraining set", 1, 1000)
    lr: float = knob(0.01, "SGD learning rate", 1e-6, 10.0)
    momentum: float = knob(0.9, "SGD momentum", 0.0, 1.0)
    weight_decay: float = knob(2e-4, "L2 on the layer's weights and bias (SGD's weight_decay)", 0.0, 1.0)
    batch_size: int = knob(128, "minibatch size", 1, 65536)
    milestone: int = knob(30, "epoch at which the lr is multiplied by gamma (0: never)", 0, 1000)
    gamma: float = knob(0.1, "lr factor at the milestone", 0.0, 1.0)
    augment: bool = knob(False, "random crop (pad 4) + flip of the images, through the frozen extractor, "
                         "each epoch (the benchmark's training transform; costs a forward pass per image per epoch)")


def _n_classes(head: torch.nn.Module, data: "HeadData | None" = None) -> int:
    return int(data.n_classes if data is not None and data.n_classes is not None else head.n_classes)


def _feat_dim(head: torch.nn.Module) -> int:
    return int(head.feat_dim)


def fit_linear_head(head: torch.nn.Module, data: HeadData, settings: LinearHeadSettings,
                    seed: int = 0) -> torch.nn.Module:
    """A freshly initialised linear softmax head (seeded) trained by the benchmark's recipe; on an
    LGM model's features it is a plain linear classifier on Gaussian features."""
    s = settings
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = SoftmaxHead(_feat_dim(head), _n_classes(head, data))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(new.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    n = len(data.labels)
    if s.augment and (data.images is None or data.extract is None):
        raise ValueError("an augmented head needs the retraining images and the frozen extractor")
    new.train()
    for epoch in range(s.epochs):
        for group in opt.param_groups:
            group["lr"] = s.lr * (s.gamma if s.milestone and epoch >= s.milestone else 1.0)
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, s.batch_size):
            idx = order[i:i + s.batch_size]
            if s.augment:
                with torch.no_grad():
                    x = augment_batch(to_input(data.images[idx.numpy()]), "crop-flip", gen)
                    feats = data.extract(x)
            else:
                feats = data.feats[idx]
            loss = torch.nn.functional.cross_entropy(new(feats), data.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return new.eval()


class NearestMeanHead(torch.nn.Module):
    """Nearest class mean on the features: logits -||f - mu_k||^2 / 2. The LGM head with identity
    covariance decides the same way, so this asks whether any prototype head resists, Gaussian
    training or not."""

    kind = "ncm"
    capabilities: frozenset = frozenset()

    def __init__(self, means: torch.Tensor, present: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("means", means)
        self.register_buffer("present", present)  # bool per class: a class with no example is never chosen
        self.n_classes, self.feat_dim = means.shape

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        logits = -0.5 * torch.cdist(f, self.means).pow(2)
        return logits.masked_fill(~self.present, float("-inf"))


NoHeadSettings = NoSettings  # a head with nothing to tune


def fit_nearest_mean(head: torch.nn.Module, data: HeadData, settings: NoHeadSettings,
                     seed: int = 0) -> torch.nn.Module:
    """Class means of the retraining features (a class with no example is never predicted)."""
    k = _n_classes(head, data)
    present = torch.tensor([bool((data.labels == c).any()) for c in range(k)])
    means = torch.stack([data.feats[data.labels == c].mean(0) if present[c] else torch.zeros(data.feats.shape[1])
                         for c in range(k)])
    return NearestMeanHead(means.float(), present).eval()


def fit_gaussians(head: torch.nn.Module, data: HeadData, settings: NoHeadSettings,
                  seed: int = 0) -> torch.nn.Module:
    """Class means and per-dimension variances of the retraining features: the LGM head's
    decision rule and likelihood, estimated rather than learned (for an extractor that never saw
    the victim's classes, where the model's own Gaussians describe other classes)."""
    return FittedGaussians.fit(data.feats, data.labels, _n_classes(head, data))


@dataclass(frozen=True)
class VictimHead:
    """One way to refit a transfer victim's head on frozen features: ``fit(model_head, data,
    settings, seed)`` returns a new head (``forward(features) -> logits``)."""

    name: str
    label: str  # the name a person reads
    summary: str
    settings: type[Settings]
    fit: Callable[..., torch.nn.Module]
    why_not: Callable[[torch.nn.Module, Settings], str | None] = lambda head, settings: None  # noqa: E731
    own_classes: bool = False  # starts from the model's trained head: needs the victim's classes to be the model's

    def needs_images(self, settings: Settings) -> bool:
        return bool(getattr(settings, "augment", False))


def _warm_why_not(head: torch.nn.Module, settings: WarmHeadSettings) -> str | None:
    """Weight decay acts on a linear layer's weights; the LGM head has means and variances only."""
    if settings.weight_decay and not any(n.endswith("weight") for n, _ in head.named_parameters()):
        return f"weight decay needs a head with weights (a softmax head), not the {head.kind} head"
    return None


VICTIM_HEADS: dict[str, VictimHead] = {v.name: v for v in (
    VictimHead("warm", "warm-started head, full-batch Adam",
               "the attacked model's own head, refitted from where it was on clean data plus poisons",
               WarmHeadSettings, lambda head, data, s, seed: retrain_head(head, data.feats, data.labels, s, seed),
               _warm_why_not, own_classes=True),
    VictimHead("linear", "new linear head, the benchmark's SGD recipe",
               "a freshly initialised linear softmax layer trained as the poisoning benchmark's transfer victim",
               LinearHeadSettings, fit_linear_head),
    VictimHead("ncm", "nearest class mean",
               "each class's mean retraining feature; an image goes to the nearest mean", NoHeadSettings,
               fit_nearest_mean),
    VictimHead("gaussian", "class Gaussians, fitted",
               "each class's mean and per-dimension variance of the retraining features; an image goes to "
               "the most likely class (the LGM rule, estimated)", NoHeadSettings, fit_gaussians),
)}


@dataclass(frozen=True)
class Retraining:
    """Which victim a trial retrains: the setting, the transfer head and its settings, the seed;
    and, end to end, the fine-tuning epochs and learning rate."""

    setting: str = "transfer"
    head: str = "warm"
    head_settings: Settings | None = None  # default: the head's own defaults
    seed: int = 0
    epochs: int = 1  # end2end (the pipeline's default before the redesign)
    lr: float = 0.01  # end2end

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}")
        if self.head not in VICTIM_HEADS:
            raise ValueError(f"unknown victim head {self.head!r}; choose one of {', '.join(VICTIM_HEADS)}")
        want = VICTIM_HEADS[self.head].settings
        if self.head_settings is None:
            object.__setattr__(self, "head_settings", want())
        elif not isinstance(self.head_settings, want):
            raise ValueError(f"the {self.head} head takes {want.__name__}")
        if not 1 <= self.epochs <= 1000 or not 0 < self.lr <= 10:
            raise ValueError("epochs must be in 1..1000 and lr in (0, 10]")

    def refit_head(self, head: torch.nn.Module, data: HeadData) -> torch.nn.Module:
        why = self.why_not(head)
        if why:
            raise ValueError(why)
        return VICTIM_HEADS[self.head].fit(head, data, self.head_settings, self.seed)

    def why_not(self, head: torch.nn.Module, new_classes: bool = False) -> str | None:
        """Why this victim cannot be retrained on a model with ``head``, or None. ``new_classes``:
        the victim's classes are not the ones the model's head was trained on."""
        if new_classes and VICTIM_HEADS[self.head].own_classes:
            return (f"the {VICTIM_HEADS[self.head].label} starts from the model's own head, which was trained "
                    "on other classes than the victim's")
        return VICTIM_HEADS[self.head].why_not(head, self.head_settings)

    @property
    def needs_images(self) -> bool:
        return self.setting == "transfer" and VICTIM_HEADS[self.head].needs_images(self.head_settings)


def _as_float_images(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def retrain_victim(model: Classifier, poisons: Poisons, clean: tuple[np.ndarray, np.ndarray],
                   test: tuple[np.ndarray, np.ndarray], victim: Retraining = Retraining(), *,
                   keep: np.ndarray | None = None, clean_feats: torch.Tensor | None = None,
                   test_feats: torch.Tensor | None = None, n_classes: int | None = None) -> tuple[Outcome, Classifier]:
    """Retrain a copy of ``model`` on ``clean`` (images, labels) plus poisons as ``victim`` says;
    returns (outcome on ``test``, the victim).

    ``keep`` (bool per poison) drops poisons a defence flagged before retraining; ``clean_feats``
    (transfer only) and ``test_feats`` are the clean and test images' features under ``model``, if
    the caller already has them: an experiment retrains one victim per defence on the same data, and
    recomputing 1000 test features each time cost more than the retraining itself. ``n_classes``:
    the victim's classes when they are not the model head's (the new-classes setting; transfer only).
    """
    (x_clean, y_clean), (x_test, y_test), setting, seed = clean, test, victim.setting, victim.seed
    p_imgs = poisons.poisons if keep is None else poisons.poisons[np.asarray(keep, bool)]
    p_labels = poisons.base_labels if keep is None else poisons.base_labels[np.asarray(keep, bool)]
    net = copy.deepcopy(model).eval()
    target = poisons.target
    with torch.no_grad():
        probs_before = torch.softmax(net(to_input(target).to(next(net.parameters()).device)), 1)[0].cpu()
        f_poison = extract_features(net, poisons.poisons)
        f_target = extract_features(net, target)
    test_before = extract_features(net, x_test) if test_feats is None else torch.as_tensor(test_feats).float()
    acc_before = float((net.head(test_before.to(next(net.parameters()).device)).argmax(1).cpu().numpy()
                        == y_test).mean())
    if setting == "transfer":
        net = net.cpu()
        clean_f = extract_features(net, x_clean) if clean_feats is None else torch.as_tensor(clean_feats).float()
        feats = torch.cat([clean_f, extract_features(net, p_imgs)])
        labels = torch.as_tensor(np.concatenate([y_clean, p_labels]), dtype=torch.long)
        data = HeadData(feats, labels, n_classes=n_classes)
        if victim.needs_images:  # batch norm as the benchmark's frozen extractor: eval mode
            extractor = frozen_copy(net)
            data = HeadData(feats, labels, np.concatenate([_as_float_images(x_clean), _as_float_images(p_imgs)]),
                            lambda x: extractor.features(x), n_classes=n_classes)
        net.head = victim.refit_head(net.head, data)
        test_after = test_before
    else:
        if n_classes is not None and n_classes != _n_classes(net.head):
            raise ValueError("end-to-end retraining keeps the model's head: its classes must be the victim's")
        images = np.concatenate([_as_float_images(x_clean), _as_float_images(p_imgs)])
        labels_np = np.concatenate([y_clean, p_labels]).astype(np.int64)
        torch.manual_seed(seed)
        fit(net, images, labels_np, TrainConfig(epochs=victim.epochs, lr=victim.lr, seed=seed, warmup_frac=0.0,
                                                margin_warmup_epochs=0.0), progress=False)
        net.eval()
        test_after = extract_features(net, x_test)
    device = next(net.parameters()).device
    with torch.no_grad():
        probs_after = torch.softmax(net(to_input(target).to(device)), 1)[0].cpu()
        acc_after = float((net.head(test_after.to(device)).argmax(1).cpu().numpy() == y_test).mean())
    base_label = int(poisons.base_labels[0])
    pert = poisons.perturbation()
    outcome = Outcome(
        setting=setting, success=int(probs_after.argmax()) == base_label, target_label=poisons.target_label,
        base_label=base_label, pred_before=int(probs_before.argmax()), pred_after=int(probs_after.argmax()),
        probs_before=probs_before.tolist(), probs_after=probs_after.tolist(), clean_acc_before=acc_before,
        clean_acc_after=acc_after, n_poisons=int(len(p_imgs)), n_clean=int(len(x_clean)),
        poison_l2=pert["l2"], poison_linf=pert["linf"],
        feature_distance=(f_poison - f_target).norm(dim=1).tolist())
    return outcome, net
