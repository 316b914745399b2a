"""One poisoning trial, the same everywhere: the dashboard, the CLI, the experiments, the benchmarks.

A trial is *planned* from one seeded generator (``plan_trial``) and then *run* against one model
(``run_trial``):

1. plan: a stratified clean-accuracy test set; a target among the test images every model in play
   classifies correctly (never one of that test set); a base class; a stratified clean retraining
   subset; bases of the base class outside it, each labelled as its class by the clean-label judge
   (so a poison that is not clean-label was made so by its perturbation, not by an odd base);
2. craft the poisons against the model;
3. judge them (``core.judge``): clean-label when both judges still say the base class;
4. score the pool (clean subset + poisons) with each defence, flag at a false-positive rate set on
   the clean subset;
5. retrain one victim per defence on what that defence kept, and record whether the target now
   reads as the base class.

The data packs are stored sorted by class, so nothing here ever takes "the first N" images.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .attacks import AttackSettings, Poisons, get_attack
from .data import Dataset, stratified_sample
from .defences import applies, get_defence, label, roc
from .judge import Judge, Verdict
from .lgm import FittedGaussians
from .models import Classifier, extract_features, predict_logits
from .victim import Outcome, Retraining, retrain_victim


@dataclass(frozen=True)
class TrialPlan:
    """Everything a trial draws at random, as indices into the data set."""

    seed: tuple[int, ...]
    target_index: int  # into the test split
    target_label: int
    base_class: int
    base_indices: np.ndarray  # into the train split
    clean_indices: np.ndarray  # into the train split: the victim's clean retraining data
    test_indices: np.ndarray  # into the test split: the clean-accuracy set (stratified)

    def to_dict(self) -> dict:
        return {"seed": list(self.seed), "target_index": self.target_index, "target_label": self.target_label,
                "base_class": self.base_class, "base_indices": self.base_indices.tolist()}


def correct_targets(models: list[Classifier], data: Dataset) -> np.ndarray:
    """Test indices that every model in ``models`` classifies correctly (candidate targets)."""
    ok = np.ones(len(data.y_test), bool)
    for m in models:
        ok &= predict_logits(m, data.x_test).argmax(1).numpy() == data.y_test
    return np.flatnonzero(ok)


def plan_trial(data: Dataset, seed: int | tuple[int, ...], candidates: np.ndarray, *, n_poisons: int,
               n_clean: int = 1000, n_test: int = 1000, target_index: int | None = None,
               base_class: int | None = None, external_label: int | None = None,
               judge: Judge | None = None, bases_from_clean: bool = False) -> TrialPlan:
    """Draw a trial from ``numpy.random.default_rng(seed)``; ``target_index`` / ``base_class`` fix
    those choices (the dashboard's user picks them), everything else still comes from the seed.
    ``external_label``: the target is an image from outside the data set (an upload) with this
    label; the plan then has ``target_index = -1`` and ``run_trial`` needs the image.

    ``bases_from_clean``: the poisoning benchmark's protocol. The bases are drawn from the clean
    retraining set's base-class images and leave it, so the poisons take their place (2500 images
    = 2475 clean + 25 poisons, 250 per class); otherwise they come from outside it (the lab's
    protocol: the clean set keeps all its images and the poisons come on top)."""
    seed = tuple(np.atleast_1d(seed).tolist())
    rng = np.random.default_rng(seed)
    n_classes = len(data.classes)
    fixed = [target_index] if target_index is not None and target_index >= 0 else None
    test = stratified_sample(data.y_test, min(n_test, len(data.y_test) - 1), rng, exclude=fixed)
    if external_label is not None:
        target_index, target_label = -1, int(external_label)
    elif target_index is None:
        free = np.setdiff1d(candidates, test)
        if len(free) == 0:
            raise ValueError("no correctly classified test image is left to be a target")
        target_index = int(rng.choice(free))
    if external_label is None:
        target_label = int(data.y_test[target_index])
    if base_class is None:
        base_class = int(rng.choice([c for c in range(n_classes) if c != target_label]))
    if base_class == target_label:
        raise ValueError("the base class must differ from the target's class")
    if bases_from_clean:
        clean = stratified_sample(data.y_train, min(n_clean, len(data.y_train)), rng)
        pool = rng.permutation(clean[data.y_train[clean] == base_class])
    else:
        clean = stratified_sample(data.y_train, min(n_clean, len(data.y_train) - n_poisons), rng)
        pool = rng.permutation(np.setdiff1d(np.flatnonzero(data.y_train == base_class), clean))
    if len(pool) < n_poisons:
        raise TooFewBases(f"only {len(pool)} training images of class {base_class} are free; ask for fewer poisons")
    bases = _judged_bases(data, pool, base_class, n_poisons, judge)
    if bases_from_clean:
        clean = np.setdiff1d(clean, bases)
    return TrialPlan(seed=seed, target_index=int(target_index), target_label=target_label, base_class=base_class,
                     base_indices=bases, clean_indices=clean, test_indices=test)


class TooFewBases(ValueError):
    """A plan's base class has fewer usable images than poisons asked for (e.g. 50 poisons among a
    class's 250 clean images, of which the judges pass fewer than 50): the trial cannot be drawn."""


def _judged_bases(data: Dataset, pool: np.ndarray, base_class: int, n: int, judge: Judge | None) -> np.ndarray:
    """The first ``n`` of the shuffled ``pool`` that both judges label ``base_class``."""
    if judge is None:
        return pool[:n]
    chosen: list[int] = []
    for start in range(0, len(pool), max(4 * n, 16)):
        chunk = pool[start:start + max(4 * n, 16)]
        v = judge.verdict(data.x_train[chunk], base_class, exclude=chunk)
        chosen.extend(chunk[v.clean_label].tolist())
        if len(chosen) >= n:
            return np.asarray(chosen[:n])
    raise TooFewBases(f"fewer than {n} images of class {base_class} are labelled so by the judges")


# part of the feature cache's key: bump it when the feature computation itself changes
# (normalisation, the extractors' forward), so no cached bank from before is ever read
FEATURES_VERSION = "1"


@dataclass(frozen=True)
class FeatureBank:
    """A model's penultimate features of a data set's whole train and test splits."""

    train: np.ndarray
    test: np.ndarray

    @classmethod
    def compute(cls, model: Classifier, data: Dataset) -> "FeatureBank":
        return cls(extract_features(model, data.x_train).numpy(), extract_features(model, data.x_test).numpy())

    @classmethod
    def cached(cls, model: Classifier, data: Dataset, folder: str | Path, model_sha256: str) -> "FeatureBank":
        """``compute``, kept in ``folder`` under a key of the model's weights and the data's images:
        every worker of a grid, and every rerun, then reads the features instead of recomputing
        60000 CIFAR forward passes (minutes per model on two cores). A file that does not match
        the key's shapes is recomputed."""
        digest = hashlib.sha256()
        for part in (FEATURES_VERSION.encode(), model_sha256.encode(), json.dumps(model.config.to_dict(), sort_keys=True).encode(),
                     data.name.encode(), str(data.class_ids).encode(),
                     data.y_train.tobytes(), data.y_test.tobytes(), data.x_train[::997].tobytes(),
                     data.x_test[::997].tobytes(), str(data.x_train.shape).encode()):
            digest.update(part)
        path = Path(folder) / f"bank_{digest.hexdigest()[:32]}.npz"
        d = int(model.config.feat_dim)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as z:
                    train, test = z["train"], z["test"]
                if train.shape == (len(data.y_train), d) and test.shape == (len(data.y_test), d):
                    return cls(train, test)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                pass  # unreadable: computed again below
        bank = cls.compute(model, data)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, train=bank.train, test=bank.test)
        tmp.replace(path)
        return bank


@dataclass
class VictimResult:
    """One retrained victim: trained on everything, or on what one defence kept."""

    defence: str
    outcome: Outcome
    poisons_kept: int
    detection: dict = field(default_factory=dict)  # auc, threshold, poisons_flagged, clean_flagged, scores
    clean_scores: np.ndarray | None = None  # the filter's scores of the clean pool (not stored in records)
    head: torch.nn.Module | None = None  # the retrained head (transfer): its decision regions can be drawn

    @property
    def success(self) -> bool:
        return self.outcome.success


@dataclass
class TrialResult:
    """Everything one trial produced against one model."""

    plan: TrialPlan
    attack: str
    setting: str
    poisons: Poisons
    verdict: Verdict | None
    victims: dict[str, VictimResult]
    poison_features: np.ndarray  # [k, d] under the attacked model
    clean_features: np.ndarray  # [n_clean, d]
    controls: dict[str, dict[str, VictimResult]] = field(default_factory=dict)  # other victims, same poisons

    @property
    def clean_label(self) -> bool:
        """Every poison of the trial is clean-label (False when no judge looked)."""
        return bool(self.verdict is not None and self.verdict.clean_label.all())

    def record(self) -> dict:
        """A JSON-ready record (what the experiment runner stores per trial)."""
        pert = self.poisons.perturbation()
        plan = {k: v for k, v in self.plan.to_dict().items() if k != "seed"}
        out = {"attack": self.attack, "setting": self.setting, "n_poisons": int(len(self.poisons.poisons)),
               **plan, "craft_s": round(self.poisons.time_s, 3),
               "iterations_run": int(self.poisons.traj_iters[-1]),
               "feature_distance": float(self.poisons.final_feature_distance.mean()),
               "l2": float(np.mean(pert["l2"])), "linf": float(np.max(pert["linf"])),
               "judge": self.verdict.to_dict() if self.verdict is not None else None,
               "clean_label": self.clean_label, "defences": {}}
        for name, v in self.victims.items():
            out["defences"][name] = {"success": v.success, "pred_after": v.outcome.pred_after,
                                     "clean_acc_after": v.outcome.clean_acc_after,
                                     "poisons_kept": v.poisons_kept, **v.detection}
        if self.controls:  # the same poisons against other victims: outcomes only (detection is the same)
            out["victims"] = {name: {d: {"success": v.success, "pred_after": v.outcome.pred_after,
                                         "clean_acc_after": v.outcome.clean_acc_after, "poisons_kept": v.poisons_kept}
                                     for d, v in results.items()} for name, results in self.controls.items()}
        return out


def run_trial(model: Classifier, data: Dataset, plan: TrialPlan, attack: str, settings: AttackSettings, *,
              defences: tuple[str, ...] = ("none",), fpr: float = 0.05, victim: Retraining = Retraining(),
              controls: dict[str, Retraining] | None = None, judge: Judge | None = None,
              target: np.ndarray | None = None, bank: "FeatureBank | None" = None,
              new_classes: bool = False, progress: Callable[[str], None] | None = None) -> TrialResult:
    """Craft against ``model``, judge, filter with each applicable defence, retrain a victim each
    (``victim``: the setting, the head's recipe, the seed). ``controls``: further victims retrained
    on the same poisons behind the same filters (other heads, other recipes: no re-crafting).

    ``target`` replaces the planned test image (an uploaded picture); its label stays the plan's.
    ``bank``: the model's features of both whole splits, when the caller runs many trials (the
    clean and test features are then looked up instead of recomputed: the same decisions, less time).
    ``new_classes``: ``data``'s classes are not the ones the model was trained on (the benchmark's
    decisive condition, ``data.class_split``). Victims then start from a new head with the data's
    classes (a warm-started head is refused), and the LGM likelihood filter uses class Gaussians
    fitted on the pool it filters (means and per-dimension variances, poisons included, as every
    pool statistic here), since the model's own Gaussians describe other classes.
    """
    say = progress or (lambda _msg: None)
    head = model.config.head
    for name, recipe in {"victim": victim, **(controls or {})}.items():  # before crafting: fail fast
        why = recipe.why_not(model.head, new_classes)
        if why:
            raise ValueError(f"{name}: {why}")
    if target is None and plan.target_index < 0:
        raise ValueError("this plan's target is an outside image: pass it as target=")
    target_img = data.x_test[plan.target_index:plan.target_index + 1] if target is None else target
    k = len(plan.base_indices)
    say(f"crafting {k} poison(s) against the {head} model")
    poisons = get_attack(attack).craft(model, data.x_train[plan.base_indices], target_img,
                                       np.full(k, plan.base_class), plan.target_label, settings)
    return evaluate_poisons(model, data, plan, attack, poisons, defences=defences, fpr=fpr, victim=victim,
                            controls=controls, judge=judge, bank=bank, new_classes=new_classes, progress=progress)


def fit_filter(defence: str, model: Classifier, pool: np.ndarray, claimed: np.ndarray, n_clean: int,
               n_classes: int, fpr: float, new_classes: bool = False):
    """``defence`` fitted on a trial's pool (its first ``n_clean`` rows clean and trusted, then the
    poisons) as every trial fits it; the likelihood reads Gaussians fitted on the pool where the
    model was pretrained on other classes (its own describe those)."""
    spec = get_defence(defence)
    gaussians = FittedGaussians.fit(pool, claimed, n_classes) if new_classes and spec.requires else model.head
    trusted = np.r_[np.ones(n_clean, bool), np.zeros(len(pool) - n_clean, bool)]
    return spec.make(gaussians).fit(pool, claimed, trusted=trusted, fpr=fpr)


def evaluate_poisons(model: Classifier, data: Dataset, plan: TrialPlan, attack: str, poisons: Poisons, *,
                     defences: tuple[str, ...] = ("none",), fpr: float = 0.05, victim: Retraining = Retraining(),
                     controls: dict[str, Retraining] | None = None, judge: Judge | None = None,
                     bank: "FeatureBank | None" = None, new_classes: bool = False,
                     progress: Callable[[str], None] | None = None) -> TrialResult:
    """Steps 3-5 of a trial on poisons already made (``run_trial`` after crafting; a replay of an
    experiment's stored poisons against other victims or filters, without crafting again)."""
    say = progress or (lambda _msg: None)
    head = model.config.head
    k = len(poisons.poisons)
    n_classes = len(data.classes) if new_classes else None
    for name, recipe in {"victim": victim, **(controls or {})}.items():
        why = recipe.why_not(model.head, new_classes)
        if why:
            raise ValueError(f"{name}: {why}")
    verdict = judge.verdict(poisons.poisons, plan.base_class, exclude=plan.base_indices) if judge else None
    say("scoring the training pool with each filter")
    x_clean, y_clean = data.x_train[plan.clean_indices], data.y_train[plan.clean_indices]
    x_test, y_test = data.x_test[plan.test_indices], data.y_test[plan.test_indices]
    if bank is not None:
        clean_feats, test_feats = bank.train[plan.clean_indices], torch.from_numpy(bank.test[plan.test_indices])
    else:
        clean_feats, test_feats = extract_features(model, x_clean).numpy(), extract_features(model, x_test)
    poison_feats = extract_features(model, poisons.poisons).numpy()
    pool = np.concatenate([clean_feats, poison_feats])
    claimed = np.concatenate([y_clean, poisons.base_labels])
    n_clean = len(clean_feats)
    filtered: dict[str, tuple] = {}
    for defence in defences:
        if not applies(defence, head):
            continue
        if defence == "none":
            filtered[defence] = (np.ones(n_clean, bool), np.ones(k, bool), {}, None)
            continue
        f = fit_filter(defence, model, pool, claimed, n_clean, len(data.classes), fpr, new_classes)
        s, flags = f.scores_, f.flags_
        det = {"auc": roc(s[:n_clean], s[n_clean:])["auc"], "threshold": f.threshold_, "rule": f.rule_,
               "poisons_flagged": float(flags[n_clean:].mean()), "clean_flagged": float(flags[:n_clean].mean()),
               "poison_scores": s[n_clean:].tolist(), "poison_flags": flags[n_clean:].tolist(),
               "clean_score_quantiles": np.quantile(s[:n_clean], [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]).tolist()}
        filtered[defence] = (~flags[:n_clean], ~flags[n_clean:], det, s)

    def retrain_all(recipe: Retraining, name: str) -> dict[str, VictimResult]:
        out = {}
        for defence, (keep_clean, keep_poison, det, s) in filtered.items():
            say(f"retraining the {name} ({label(defence)})")
            outcome, net = retrain_victim(model, poisons, (x_clean[keep_clean], y_clean[keep_clean]),
                                          (x_test, y_test), recipe, keep=keep_poison,
                                          clean_feats=clean_feats[keep_clean] if recipe.setting == "transfer" else None,
                                          test_feats=test_feats, n_classes=n_classes)
            out[defence] = VictimResult(defence, outcome, int(keep_poison.sum()), det,
                                        None if s is None else s[:n_clean],
                                        net.head if recipe.setting == "transfer" else None)
        return out

    victims = retrain_all(victim, "victim")
    others = {name: retrain_all(recipe, f"{name} victim") for name, recipe in (controls or {}).items()}
    return TrialResult(plan=plan, attack=attack, setting=victim.setting, poisons=poisons, verdict=verdict,
                       victims=victims, poison_features=poison_feats, clean_features=clean_feats, controls=others)
