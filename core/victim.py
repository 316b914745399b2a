"""Victim retraining: does a model trained on clean data plus the poisons misclassify the target?

Two settings, as in the poisoning benchmarks:

- ``transfer``: the feature extractor is frozen and only the head is retrained (softmax: the
  linear layer; LGM: the class means and variances). Features are computed once, so this is fast.
- ``end2end``: the whole network is fine-tuned for a few epochs on the clean subset plus poisons.

The shared model is never changed: the victim is always a deep copy (the dashboard serves one
cached model to many users at once).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .attacks import Poisons
from .models import Classifier, to_input
from .train import TrainConfig, fit

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


@torch.no_grad()
def extract_features(model: Classifier, images: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    """Penultimate features of NHWC images (uint8 or float in [0, 1]), in eval mode, on CPU."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = [model.features(to_input(images[i:i + batch_size]).to(device)).cpu()
           for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.config.feat_dim)


def retrain_head(head: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor, steps: int = 1000,
                 lr: float = 0.01, seed: int = 0, weight_decay: float = 0.0, tol: float = 1e-5) -> torch.nn.Module:
    """Fine-tune a copy of a head on fixed features (full batch, Adam); returns the copy.

    Stops early once the loss has changed by less than ``tol`` (relative) over 50 steps: the head
    no longer moves, and the remaining steps would only cost time. ``weight_decay`` (L2 on the
    softmax weights) gives the regularised softmax victim of the dose-response benchmark.
    """
    torch.manual_seed(seed)
    head = copy.deepcopy(head).train()
    params = [p for p in head.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    weights = [p for n, p in head.named_parameters() if n.endswith("weight")]
    last = None
    for step in range(steps):
        loss = head.loss(feats, labels)
        if weight_decay:
            loss = loss + 0.5 * weight_decay * sum(w.pow(2).sum() for w in weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 49:
            value = float(loss.detach())
            if last is not None and abs(last - value) <= tol * max(abs(last), 1e-12):
                break
            last = value
    return head.eval()


def _as_float_images(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)


def retrain_victim(model: Classifier, poisons: Poisons, x_clean: np.ndarray, y_clean: np.ndarray,
                   x_test: np.ndarray, y_test: np.ndarray, setting: str = "transfer", *, seed: int = 0,
                   head_steps: int = 1000, head_lr: float = 0.01, epochs: int = 2, lr: float = 0.01,
                   keep: np.ndarray | None = None, clean_feats: torch.Tensor | None = None,
                   test_feats: torch.Tensor | None = None, head_weight_decay: float = 0.0) -> tuple[Outcome, Classifier]:
    """Retrain a copy of ``model`` on clean data plus poisons; returns (outcome, victim).

    ``keep`` (bool per poison) drops poisons a defence flagged before retraining; ``clean_feats``
    (transfer only) and ``test_feats`` are the clean and test images' features under ``model``, if
    the caller already has them: an experiment retrains one victim per defence on the same data, and
    recomputing 1000 test features each time cost more than the retraining itself.
    ``head_weight_decay``: L2 on the retrained head's weights (transfer; the regularised victim).
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}")
    p_imgs = poisons.poisons if keep is None else poisons.poisons[np.asarray(keep, bool)]
    p_labels = poisons.base_labels if keep is None else poisons.base_labels[np.asarray(keep, bool)]
    victim = copy.deepcopy(model).eval()
    target = poisons.target
    with torch.no_grad():
        probs_before = torch.softmax(victim(to_input(target).to(next(victim.parameters()).device)), 1)[0].cpu()
        f_poison = extract_features(victim, poisons.poisons)
        f_target = extract_features(victim, target)
    test_before = extract_features(victim, x_test) if test_feats is None else torch.as_tensor(test_feats).float()
    acc_before = float((victim.head(test_before.to(next(victim.parameters()).device)).argmax(1).cpu().numpy()
                        == y_test).mean())
    if setting == "transfer":
        victim = victim.cpu()
        clean = extract_features(victim, x_clean) if clean_feats is None else torch.as_tensor(clean_feats).float()
        feats = torch.cat([clean, extract_features(victim, p_imgs)])
        labels = torch.as_tensor(np.concatenate([y_clean, p_labels]), dtype=torch.long)
        victim.head = retrain_head(victim.head, feats, labels, head_steps, head_lr, seed,
                                   weight_decay=head_weight_decay)
        test_after = test_before
    else:
        images = np.concatenate([_as_float_images(x_clean), _as_float_images(p_imgs)])
        labels_np = np.concatenate([y_clean, p_labels]).astype(np.int64)
        torch.manual_seed(seed)
        fit(victim, images, labels_np, TrainConfig(epochs=epochs, lr=lr, seed=seed, warmup_frac=0.0,
                                                    margin_warmup_epochs=0.0), progress=False)
        victim.eval()
        test_after = extract_features(victim, x_test)
    device = next(victim.parameters()).device
    with torch.no_grad():
        probs_after = torch.softmax(victim(to_input(target).to(device)), 1)[0].cpu()
        acc_after = float((victim.head(test_after.to(device)).argmax(1).cpu().numpy() == y_test).mean())
    base_label = int(poisons.base_labels[0])
    pert = poisons.perturbation()
    outcome = Outcome(
        setting=setting, success=int(probs_after.argmax()) == base_label, target_label=poisons.target_label,
        base_label=base_label, pred_before=int(probs_before.argmax()), pred_after=int(probs_after.argmax()),
        probs_before=probs_before.tolist(), probs_after=probs_after.tolist(), clean_acc_before=acc_before,
        clean_acc_after=acc_after, n_poisons=int(len(p_imgs)), n_clean=int(len(x_clean)),
        poison_l2=pert["l2"], poison_linf=pert["linf"],
        feature_distance=(f_poison - f_target).norm(dim=1).tolist())
    return outcome, victim
