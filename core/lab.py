"""One poisoning attempt against one model, explained: what the dashboard's Poison lab shows.

Craft poisons for a chosen target and base class, score them the way the model's own defence
would (LGM: likelihood under the claimed class; softmax: distance to the class centroid, the
nearest thing it has), then retrain the transfer victim without and with that filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .attacks import Poisons, craft
from .data import Dataset, pick_attack_data
from .defences import DEFENCES, chi2_threshold, roc, score, threshold_at_fpr
from .models import Classifier
from .victim import Outcome, extract_features, retrain_victim


@dataclass
class LabResult:
    head: str
    poisons: Poisons
    outcome: Outcome  # victim retrained on everything
    filtered: Outcome  # victim retrained after the filter dropped what it flagged
    defence: str  # "lgm" or "centroid"
    poison_scores: np.ndarray
    clean_scores: np.ndarray
    threshold: float
    flagged: np.ndarray  # bool per poison
    clean_flagged: float  # share of clean training examples the filter threw away


def run_lab(model: Classifier, data: Dataset, target: np.ndarray, target_label: int, base_class: int,
            attack: str, knobs: dict, n_poisons: int, seed: int = 0, n_clean: int = 500, n_test: int = 500,
            fpr: float = 0.05, base_indices: np.ndarray | None = None,
            progress: Callable[[str], None] | None = None) -> LabResult:
    """Craft against ``model``, filter at ``fpr``, retrain the transfer victim with and without it."""
    say = progress or (lambda _msg: None)
    bases, clean = pick_attack_data(data.y_train, target_label, base_class, n_poisons, n_clean, seed)
    if base_indices is not None:
        bases = np.asarray(base_indices)[:n_poisons]
        clean = np.setdiff1d(clean, bases)
    say(f"crafting {n_poisons} poison(s) against the {model.config.head} model")
    poisons = craft(model, attack, data.x_train[bases], target, np.full(len(bases), base_class), target_label,
                    **knobs)
    say("scoring poisons with the model's own filter")
    clean_feats = extract_features(model, data.x_train[clean]).numpy()
    pool = np.concatenate([clean_feats, extract_features(model, poisons.poisons).numpy()])
    claimed = np.concatenate([data.y_train[clean], poisons.base_labels])
    defence = "lgm" if model.config.head == "lgm" else "centroid"
    s = score(defence, pool, claimed, head=model.head)
    thr = threshold_at_fpr(s[:len(clean)], fpr)
    flags = s > thr
    say("retraining the victim (transfer)")
    test = slice(0, n_test)
    test_feats = extract_features(model, data.x_test[test])
    outcome, _ = retrain_victim(model, poisons, data.x_train[clean], data.y_train[clean], data.x_test[test],
                                data.y_test[test], "transfer", seed=seed, clean_feats=clean_feats,
                                test_feats=test_feats)
    keep_clean = ~flags[:len(clean)]
    filtered, _ = retrain_victim(model, poisons, data.x_train[clean][keep_clean], data.y_train[clean][keep_clean],
                                 data.x_test[test], data.y_test[test], "transfer", seed=seed,
                                 keep=~flags[len(clean):], clean_feats=clean_feats[keep_clean],
                                 test_feats=test_feats)
    return LabResult(head=model.config.head, poisons=poisons, outcome=outcome, filtered=filtered, defence=defence,
                     poison_scores=s[len(clean):], clean_scores=s[:len(clean)], threshold=thr,
                     flagged=flags[len(clean):], clean_flagged=float(flags[:len(clean)].mean()))


def poison_pool(model: Classifier, data: Dataset, attack: str, knobs: dict, n_pairs: int = 4, n_poisons: int = 5,
                n_clean: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A training pool as a victim would see it: clean images plus the poisons of ``n_pairs`` random
    target/base pairs. Returns (features, claimed labels, is_poison)."""
    rng = np.random.default_rng(seed)
    clean = np.sort(rng.choice(len(data.y_train), min(n_clean, len(data.y_train)), replace=False))
    feats, labels, flags = [extract_features(model, data.x_train[clean]).numpy()], [data.y_train[clean]], \
        [np.zeros(len(clean), bool)]
    for _ in range(n_pairs):
        ti = int(rng.integers(len(data.y_test)))
        tl = int(data.y_test[ti])
        bc = int(rng.choice([c for c in range(len(data.classes)) if c != tl]))
        bases = rng.choice(np.setdiff1d(np.flatnonzero(data.y_train == bc), clean), n_poisons, replace=False)
        p = craft(model, attack, data.x_train[bases], data.x_test[ti:ti + 1], np.full(n_poisons, bc), tl, **knobs)
        feats.append(p.traj_features[-1])
        labels.append(p.base_labels)
        flags.append(np.ones(n_poisons, bool))
    return np.concatenate(feats), np.concatenate(labels), np.concatenate(flags)


def compare_defences(model: Classifier, feats: np.ndarray, claimed: np.ndarray, is_poison: np.ndarray) -> dict:
    """ROC, AUC and TPR at 1%/5% FPR of every defence that applies to ``model``, on the same pool.

    An identity-covariance LGM model also gets ``chi2``: what its model-based threshold (no clean
    data needed) flags at a nominal 1% and 5%, to compare with the clean data's real rate."""
    out = {}
    for defence in DEFENCES:
        if defence == "lgm" and model.config.head != "lgm":
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
