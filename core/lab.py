"""What the dashboard's Poison lab and Defences pages run, on top of the one trial pipeline.

- ``run_lab``: one trial against one model, retrained with no filter and behind the model's own
  filter (LGM: the likelihood under the claimed class; softmax: distance to the claimed class's
  centre, the nearest thing it has); ``run_lab_pair`` runs it for both models in parallel.
- ``poison_pool`` / ``compare_defences``: the poisons of several planned trials mixed into one
  clean training pool, scored by every filter that applies (ROC, AUC, true-positive rates).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

from .attacks import craft
from .data import Dataset
from .defences import DEFENCES, applicable, chi2_threshold, roc, score
from .judge import Judge
from .models import Classifier
from .pipeline import FeatureBank, TrialPlan, TrialResult, plan_trial, run_trial
from .victim import extract_features

OWN_FILTER = {"lgm": "lgm", "softmax": "centroid"}


def run_lab(model: Classifier, data: Dataset, plan: TrialPlan, attack: str, knobs: dict, *, fpr: float = 0.05,
            judge: Judge | None = None, target: np.ndarray | None = None, bank: FeatureBank | None = None,
            progress: Callable[[str], None] | None = None) -> TrialResult:
    """Craft against ``model``, judge, retrain its transfer victim without and behind its own filter.
    ``bank``: the model's features of ``data`` (the dashboard keeps them), so only the poisons are
    run through the network."""
    return run_trial(model, data, plan, attack, knobs, defences=("none", OWN_FILTER[model.config.head]),
                     setting="transfer", fpr=fpr, judge=judge, target=target, victim_seed=int(plan.seed[-1]),
                     bank=bank, progress=progress)


def run_lab_pair(runs: dict[str, tuple[Classifier, str, dict]], data: Dataset, plan: TrialPlan, *,
                 fpr: float = 0.05, judge: Judge | None = None, target: np.ndarray | None = None,
                 banks: dict[str, FeatureBank] | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, TrialResult]:
    """``run_lab`` for several models at once ({name: (model, attack, knobs)}), one thread and one
    core each: the dashboard's softmax-vs-LGM run takes the time of the slower model, not the sum.
    Results are the same as running them one after another (each run is seeded by ``plan``)."""
    say = progress or (lambda _msg: None)

    def one(name: str) -> TrialResult:
        torch.set_num_threads(1)  # per thread: the models share the cores instead of fighting over them
        model, attack, knobs = runs[name]
        return run_lab(model, data, plan, attack, knobs, fpr=fpr, judge=judge, target=target,
                       bank=(banks or {}).get(name), progress=lambda msg: say(f"{name}: {msg}"))

    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        futures = {name: pool.submit(one, name) for name in runs}
        return {name: f.result() for name, f in futures.items()}


def poison_pool(model: Classifier, data: Dataset, attack: str, knobs: dict, candidates: np.ndarray, *,
                n_pairs: int = 4, n_poisons: int = 5, n_clean: int = 500, seed: int = 0,
                judge: Judge | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A training pool as a victim would see it: the clean subset of the first planned trial plus the
    poisons of ``n_pairs`` planned trials (targets among ``candidates``, the correctly classified
    test images). Returns (features, claimed labels, is_poison)."""
    plans = [plan_trial(data, (seed, p), candidates, n_poisons=n_poisons, n_clean=n_clean, n_test=10, judge=judge)
             for p in range(n_pairs)]
    all_bases = np.concatenate([p.base_indices for p in plans])
    clean = np.setdiff1d(plans[0].clean_indices, all_bases)
    feats, labels = [extract_features(model, data.x_train[clean]).numpy()], [data.y_train[clean]]
    for p in plans:
        poisons = craft(model, attack, data.x_train[p.base_indices], data.x_test[p.target_index:p.target_index + 1],
                        np.full(n_poisons, p.base_class), p.target_label, **knobs)
        feats.append(extract_features(model, poisons.poisons).numpy())
        labels.append(poisons.base_labels)
    is_poison = np.r_[np.zeros(len(clean), bool), np.ones(n_pairs * n_poisons, bool)]
    return np.concatenate(feats), np.concatenate(labels), is_poison


def compare_defences(model: Classifier, feats: np.ndarray, claimed: np.ndarray, is_poison: np.ndarray) -> dict:
    """ROC, AUC and TPR at 1%/5% FPR of every defence that applies to ``model``, on the same pool.

    An identity-covariance LGM model also gets ``chi2``: what its model-based threshold (no clean
    data needed) flags at a nominal 1% and 5%, to compare with the clean data's real rate."""
    out = {}
    for defence in DEFENCES:
        if applicable(defence, model.config.head):
            continue
        s = score(defence, feats, claimed, head=model.head)
        out[defence] = {**roc(s[~is_poison], s[is_poison]), "scores": s}
        if defence == "lgm" and model.head.covariance == "identity":
            out[defence]["chi2"] = []
            for f in (0.01, 0.05):
                t = chi2_threshold(model.head, f)
                out[defence]["chi2"].append({"nominal_fpr": f, "threshold": t,
                                             "clean_flagged": float(np.mean(s[~is_poison] > t)),
                                             "poisons_flagged": float(np.mean(s[is_poison] > t))})
    return out
