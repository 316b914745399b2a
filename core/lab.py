"""What the dashboard's Poison lab, Defences page and Overview run, on top of the one trial pipeline.

- ``lab_runs`` / ``run_lab`` / ``run_lab_pair``: one trial against each model of a pair, the
  attack each model gets (an attack a head cannot take falls back, ``Attack.for_head``), each
  retrained with no filter and behind the model's own filter (``defences.own_filter``), the models
  in parallel.
- ``poison_pool`` / ``compare_defences`` / ``defence_comparison``: the poisons of several planned
  trials mixed into one clean training pool, scored by every filter that applies (ROC, AUC,
  true-positive rates).
- ``example_poison``: one poison crafted now, where no shipped example exists.
- ``lab_default``: the press the lab opens on, chosen by measurement (``bench/lab_default.py``).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .attacks import ATTACKS, AttackSettings, Poisons, get_attack, settings_for, stealth_for
from .checkpoints import CHECKPOINT_DIR
from .data import Dataset
from .defences import DEFENCES, chi2_threshold, lgm_scores, own_filter, roc
from .judge import Judge
from .models import Classifier, extract_features, predict_logits
from .pipeline import FeatureBank, TrialPlan, TrialResult, plan_trial, run_trial
from .victim import Retraining

# The lab's sizes: a class of students shares one server, so a run stays small.
LAB_CLEAN, LAB_TEST = 500, 500
LAB_MAX_POISONS, LAB_MAX_ITERS = 10, 1000  # one student must not starve the rest of the class
POOL_CLEAN, POOL_POISONS = 500, 5


def lab_runs(models: dict[str, Classifier], attack: str, dataset: str, *, trial_seed: int | None = None,
             n_poisons: int = 0, **values) -> dict[str, tuple[Classifier, str, AttackSettings]]:
    """{name: (model, the attack it gets, its settings)} for a softmax-vs-LGM run: a model whose head
    cannot take ``attack`` gets the attack's fallback (the defence-aware term needs class
    Gaussians; the softmax model gets plain collision), with the values that attack has."""
    asked = get_attack(attack)
    unknown = set(values) - set(asked.settings.knobs())
    if unknown:
        raise ValueError(f"{asked.label} has no setting {', '.join(sorted(unknown))}")
    runs = {}
    for name, m in models.items():
        entry = asked.for_head(m.config.head)
        known = entry.settings.knobs()  # the fallback keeps what it has of the asked attack's values
        mine = {k: v for k, v in values.items() if k in known}
        if "stealth" in known and "stealth" not in mine:  # each model hides from the filter it brings
            mine["stealth"] = stealth_for(own_filter(m.config.head))
        if "class_size" in known and "class_size" not in mine:  # the lab's clean set, poisons on top
            mine["class_size"] = LAB_CLEAN // m.config.n_classes + n_poisons
        runs[name] = (m, entry.name, settings_for(entry.name, dataset, trial_seed=trial_seed, **mine))
    return runs


def run_lab(model: Classifier, data: Dataset, plan: TrialPlan, attack: str, settings: AttackSettings, *,
            fpr: float = 0.05, judge: Judge | None = None, target: np.ndarray | None = None,
            bank: FeatureBank | None = None, progress: Callable[[str], None] | None = None) -> TrialResult:
    """Craft against ``model``, judge, retrain its transfer victim without and behind its own filter.
    ``bank``: the model's features of ``data`` (the dashboard keeps them), so only the poisons are
    run through the network."""
    return run_trial(model, data, plan, attack, settings, defences=("none", own_filter(model.config.head)),
                     fpr=fpr, victim=Retraining(seed=int(plan.seed[-1])), judge=judge, target=target, bank=bank,
                     progress=progress)


def run_lab_pair(runs: dict[str, tuple[Classifier, str, AttackSettings]], data: Dataset, plan: TrialPlan, *,
                 fpr: float = 0.05, judge: Judge | None = None, target: np.ndarray | None = None,
                 banks: dict[str, FeatureBank] | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, TrialResult]:
    """``run_lab`` for several models at once ({name: (model, attack, settings)}, from ``lab_runs``),
    one thread and one core each: the dashboard's softmax-vs-LGM run takes the time of the slower
    model, not the sum. Results are the same as running them one after another (each run is seeded
    by ``plan``)."""
    say = progress or (lambda _msg: None)

    def one(name: str) -> TrialResult:
        torch.set_num_threads(1)  # per thread: the models share the cores instead of fighting over them
        model, attack, settings = runs[name]
        return run_lab(model, data, plan, attack, settings, fpr=fpr, judge=judge, target=target,
                       bank=(banks or {}).get(name), progress=lambda msg: say(f"{name}: {msg}"))

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        futures = {name: pool.submit(one, name) for name in runs}
        return {name: f.result() for name, f in futures.items()}


def own_filter_result(result: TrialResult, head: str):
    """The victim retrained behind the model's own filter, from a lab run's result."""
    return result.victims[own_filter(head)]


def point_report(model: Classifier, feats: np.ndarray, labels: np.ndarray, index: int) -> dict:
    """What the Feature space page says of one test image, from the model's stored features of the
    sample: the class probabilities, and for a model with class Gaussians its log-likelihood under
    its label and the share of the sample that is more likely than it."""
    with torch.no_grad():
        probs = torch.softmax(model.head(torch.as_tensor(feats[index:index + 1], dtype=torch.float32)), 1)[0].numpy()
    out = {"probs": probs, "pred": int(probs.argmax())}
    if "gaussian" in model.head.capabilities:
        ll = -lgm_scores(model.head, feats, labels)
        out.update(log_likelihood=float(ll[index]), more_likely_share=float(np.mean(ll > ll[index])))
    return out


def guess_label(model: Classifier, image: np.ndarray) -> int:
    """The model's class for one NHWC image (an upload's preselected label)."""
    return int(predict_logits(model, image[None]).argmax())


def poison_pool(model: Classifier, data: Dataset, attack: str, settings: AttackSettings, candidates: np.ndarray, *,
                n_pairs: int = 4, n_poisons: int = POOL_POISONS, n_clean: int = POOL_CLEAN, seed: int = 0,
                judge: Judge | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A training pool as a victim would see it: the clean subset of the first planned trial plus the
    poisons of ``n_pairs`` planned trials (targets among ``candidates``, the correctly classified
    test images). Returns (features, claimed labels, is_poison)."""
    plans = [plan_trial(data, (seed, p), candidates, n_poisons=n_poisons, n_clean=n_clean, n_test=10, judge=judge)
             for p in range(n_pairs)]
    all_bases = np.concatenate([p.base_indices for p in plans])
    clean = np.setdiff1d(plans[0].clean_indices, all_bases)
    feats, labels = [extract_features(model, data.x_train[clean]).numpy()], [data.y_train[clean]]
    entry = get_attack(attack)
    for p in plans:
        poisons = entry.craft(model, data.x_train[p.base_indices], data.x_test[p.target_index:p.target_index + 1],
                              np.full(n_poisons, p.base_class), p.target_label, settings)
        feats.append(extract_features(model, poisons.poisons).numpy())
        labels.append(poisons.base_labels)
    is_poison = np.r_[np.zeros(len(clean), bool), np.ones(n_pairs * n_poisons, bool)]
    return np.concatenate(feats), np.concatenate(labels), is_poison


def compare_defences(model: Classifier, feats: np.ndarray, claimed: np.ndarray, is_poison: np.ndarray) -> dict:
    """ROC, AUC and TPR at 1%/5% FPR of every defence that applies to ``model``, on the same pool.

    An identity-covariance LGM model also gets ``chi2``: what its model-based threshold (no clean
    data needed) flags at a nominal 1% and 5%, to compare with the clean data's real rate."""
    out = {}
    for name, spec in DEFENCES.items():
        if not spec.applies_to(model.config.head):
            continue
        s = spec.make(model.head).fit(feats, claimed, trusted=~is_poison).scores_
        out[name] = {**roc(s[~is_poison], s[is_poison]), "scores": s}
        if "gaussian" in spec.requires and model.head.covariance == "identity":
            out[name]["chi2"] = []
            for f in (0.01, 0.05):
                t = chi2_threshold(model.head, f)
                out[name]["chi2"].append({"nominal_fpr": f, "threshold": t,
                                          "clean_flagged": float(np.mean(s[~is_poison] > t)),
                                          "poisons_flagged": float(np.mean(s[is_poison] > t))})
    return out


def defence_comparison(models: dict[str, Classifier], data: Dataset, attack: str, candidates: np.ndarray, *,
                       n_pairs: int, iters: int, judge: Judge | None = None,
                       progress: Callable[[float, str], None] | None = None) -> dict:
    """The Defences page's run: for each model that ``attack`` applies to, a pool of ``n_pairs`` x 5
    poisons among 500 clean images, scored by every filter: {name: {"is_poison", "defences"}}."""
    entry, out = get_attack(attack), {}
    usable = {n: m for n, m in models.items() if entry.applies_to(m.config.head)}
    for i, (name, m) in enumerate(usable.items()):
        if progress:
            progress(i / len(usable), f"crafting {n_pairs * POOL_POISONS} poisons against the {name} model and scoring them")
        settings = settings_for(attack, data.name, iters=iters, record_every=iters)
        feats, claimed, is_poison = poison_pool(m, data, attack, settings, candidates, n_pairs=n_pairs, judge=judge)
        out[name] = {"is_poison": is_poison, "defences": compare_defences(m, feats, claimed, is_poison)}
    return out


def example_poison(model: Classifier, data: Dataset, iters: int = 100) -> tuple[int, int, Poisons]:
    """One poison crafted now with the default settings, where no shipped example exists: the first
    test 3 as target and the first training 8 as base (CIFAR-10: a dog and a cat); returns
    (target index, base index, poisons)."""
    ti = int(np.flatnonzero(data.y_test == (5 if data.name == "cifar10" else 3))[0])
    base_class = 3 if data.name == "cifar10" else 8
    bi = int(np.flatnonzero(data.y_train == base_class)[0])
    p = get_attack("fc").craft(model, data.x_train[bi:bi + 1], data.x_test[ti:ti + 1], np.array([base_class]),
                               int(data.y_test[ti]), settings_for("fc", data.name, iters=iters, record_every=iters))
    return ti, bi, p


LAB_DEFAULTS = "lab_defaults.json"  # in the checkpoints folder, written by bench/lab_default.py --ship


@dataclass(frozen=True)
class LabDefault:
    """The press the Poison lab opens on for one data set and feature space: a target, a base class
    and the attack's settings for which the lab's defaults were measured to teach something (the
    softmax victim poisoned by clean-label poisons, the LGM victim not, its filter catching some, a
    random-noise control poisoning neither). ``models``: the checkpoint file names it
    was measured on; another pair in the sidebar gets no default."""

    dataset: str
    space: str
    models: dict[str, str]
    target_index: int
    base_class: int
    attack: str
    n_poisons: int
    iters: int
    why: str
    measured: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}")
        if not 1 <= self.n_poisons <= LAB_MAX_POISONS or not 1 <= self.iters <= LAB_MAX_ITERS:
            raise ValueError(f"poisons 1..{LAB_MAX_POISONS} and steps 1..{LAB_MAX_ITERS}, "
                             f"got {self.n_poisons}, {self.iters}")

    def fits(self, pair: dict[str, str | Path]) -> bool:
        """Whether the sidebar's pair ({head: checkpoint path}) is the pair this was measured on."""
        return all(Path(str(pair.get(h, ""))).name == name for h, name in self.models.items())


def _defaults_file(folder: str | Path | None) -> Path:
    return Path(folder or CHECKPOINT_DIR) / LAB_DEFAULTS


def lab_default(dataset: str, space: str, folder: str | Path | None = None) -> LabDefault | None:
    """The shipped press for ``dataset`` in ``space`` ("2-D" or "high-d"), or None (none measured, or
    the file unreadable: the lab then opens on its plain defaults)."""
    try:
        entry = json.loads(_defaults_file(folder).read_text()).get(f"{dataset}/{space}")
        return None if entry is None else LabDefault(**entry)
    except (OSError, ValueError, TypeError):
        return None


def save_lab_default(default: LabDefault, folder: str | Path | None = None) -> Path:
    """Add or replace one data set's and space's press in the shipped file."""
    path = _defaults_file(folder)
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        entries = {}
    entries[f"{default.dataset}/{default.space}"] = asdict(default)
    path.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return path
