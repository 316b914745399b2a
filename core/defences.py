"""Poison filters on penultimate features: the LGM likelihood filter and the usual baselines.

Every defence is an estimator in scikit-learn's outlier-detector shape (as ``LocalOutlierFactor``):
``fit(features, claimed_labels, trusted=...)`` reads the training pool it is asked to clean, scores
every example (``scores_``, higher meaning more likely a poison) and sets ``threshold_`` so that a
stated false-positive rate of the *trusted* examples (the clean part of the pool, known to the
experiment, not to the filter) scores above it: every defence then throws away the same share of
clean data and the comparison is fair. ``flags_`` / ``predict`` say which examples it removes.
Statistics that come from the pool itself (class centres, neighbours, singular directions,
clusters) are computed on the pool as given, poisons included, as a real filter would.

- ``lgm``: minus the log-likelihood of the feature under the Gaussian of its claimed class, read
  from the LGM head (the paper's built-in defence). For identity covariance 2 d_y follows a
  chi-square with d degrees of freedom under the model, hence ``chi2_threshold``.
- ``centroid``: Euclidean distance to the claimed class's mean clean feature; on a softmax model it
  asks whether the distance alone, without Gaussian training, already helps.
- ``knn``: Deep k-NN (Peri et al. 2020): the share of the k nearest neighbours whose label differs.
- ``spectral``: Spectral Signatures (Tran et al. 2018): squared projection of the centred feature
  on its class's top singular direction.
- ``ac``: Activation Clustering (Chen et al. 2018): per class, PCA to a few dimensions, 2-means;
  members of the smaller cluster score 1 - its share of the class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.stats import chi2
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score, roc_curve
from threadpoolctl import threadpool_limits

from .lgm import LGMHead, head_capabilities, heads_with
from .settings import NoSettings, Settings, knob


NO_DEFENCE_LABEL = "no filter"


@dataclass(frozen=True)
class KnnSettings(Settings):
    k: int = knob(10, "neighbours that vote", 1, 10_000)


@dataclass(frozen=True)
class ACSettings(Settings):
    dims: int = knob(10, "PCA components before 2-means", 1, 4096, art="nb_dims")


class Defence:
    """Base of every filter: ``score_samples`` is the defence's own statistic; ``fit`` scores the
    pool and sets the threshold at a false-positive rate on its trusted part."""

    settings_type: ClassVar[type[Settings]] = NoSettings

    def __init__(self, settings: Settings | None = None, head: torch.nn.Module | None = None) -> None:
        self.settings = settings if settings is not None else self.settings_type()
        if not isinstance(self.settings, self.settings_type):
            raise ValueError(f"{type(self).__name__} takes {self.settings_type.__name__}")
        self.head = head

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def fit(self, features: np.ndarray, labels: np.ndarray, trusted: np.ndarray | None = None,
            fpr: float = 0.05) -> "Defence":
        """Score the pool (``features`` with their claimed ``labels``) and set ``threshold_`` so that
        ``fpr`` of the ``trusted`` examples (a boolean mask; default: all) score above it."""
        features, labels = _validated(features, labels)
        self.scores_ = self.score_samples(features, labels)
        trusted = np.ones(len(labels), bool) if trusted is None else np.asarray(trusted, bool)
        if trusted.shape != labels.shape or not trusted.any():
            raise ValueError("trusted must be a boolean mask over the pool with at least one True")
        self.threshold_ = threshold_at_fpr(self.scores_[trusted], fpr)
        self.flags_ = self.scores_ > self.threshold_
        return self

    def predict(self, scores: np.ndarray | None = None) -> np.ndarray:
        """True where an example is flagged (score above the fitted threshold)."""
        return (self.scores_ if scores is None else np.asarray(scores)) > self.threshold_


def _validated(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise ValueError(f"features must be [n, d] and labels [n]; got {features.shape} and {labels.shape}")
    if not np.isfinite(features).all():
        raise ValueError("features must be finite")
    return features, labels


class LikelihoodFilter(Defence):
    """``lgm``: minus the log-likelihood under the claimed class's Gaussian, read from the head."""

    def __init__(self, settings: Settings | None = None, head: torch.nn.Module | None = None) -> None:
        if head is None or not {"gaussian"} <= getattr(head, "capabilities", frozenset()):
            raise ValueError("the LGM filter needs an LGM model's head")
        super().__init__(settings, head)

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return lgm_scores(self.head, features, labels)


class CentroidFilter(Defence):
    """``centroid``: distance to the claimed class's mean feature in the pool."""

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return centroid_scores(features, labels, class_centroids(features, labels))


class KnnFilter(Defence):
    """``knn``: Deep k-NN's share of the k nearest neighbours that carry another label."""

    settings_type = KnnSettings

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return knn_scores(features, labels, self.settings.k)


class SpectralFilter(Defence):
    """``spectral``: squared projection on the class's top singular direction."""

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return spectral_scores(features, labels)


class ActivationClustering(Defence):
    """``ac``: per class PCA then 2-means; the smaller cluster is suspect."""

    settings_type = ACSettings

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return ac_scores(features, labels, self.settings.dims)


@dataclass(frozen=True)
class DefenceSpec:
    """One filter: its estimator, what it needs of the model's head, its names."""

    name: str
    label: str  # the name a person reads
    summary: str
    estimator: type[Defence]
    requires: frozenset = frozenset()  # head capabilities (core.lgm): "gaussian" for the likelihood

    def applies_to(self, head: str) -> bool:
        return self.requires <= head_capabilities(head)

    def why_not(self, head: str) -> str | None:
        if self.applies_to(head):
            return None
        return f"{self.label} needs an {' or '.join(h.upper() for h in heads_with(self.requires))} model"

    def make(self, head: torch.nn.Module | None = None, **settings) -> Defence:
        """The estimator for a model whose head is ``head`` (used only by a defence that requires
        the head's capabilities), with ``settings`` as keywords."""
        return self.estimator(self.estimator.settings_type.from_values(settings, self.name),
                              head if self.requires else None)


DEFENCES: dict[str, DefenceSpec] = {d.name: d for d in (
    DefenceSpec("lgm", "LGM likelihood (the paper)",
                "how unlikely the image's feature is under the Gaussian of the class it claims",
                LikelihoodFilter, frozenset({"gaussian"})),
    DefenceSpec("centroid", "Distance to class centre",
                "how far the feature is from the average feature of the class it claims", CentroidFilter),
    DefenceSpec("knn", "Deep k-NN", "how many of its 10 nearest neighbours carry another label", KnnFilter),
    DefenceSpec("spectral", "Spectral signatures",
                "how far the feature sticks out along its class's main direction of variation", SpectralFilter),
    DefenceSpec("ac", "Activation clustering", "whether it falls in the smaller of two clusters of its class",
                ActivationClustering),
)}

# The filter each kind of model brings with it: the likelihood where the head has class Gaussians,
# else the nearest thing (distance to the claimed class's centre). The lab and the showcase use it.
def own_filter(head: str) -> str:
    return "lgm" if DEFENCES["lgm"].applies_to(head) else "centroid"


def get_defence(name: str) -> DefenceSpec:
    if name not in DEFENCES:
        raise ValueError(f"unknown defence {name!r}; choose one of none, {', '.join(DEFENCES)}")
    return DEFENCES[name]


def applies(defence: str, head: str) -> bool:
    """Whether ``defence`` (or "none", no filter) can filter for a model with ``head``."""
    return defence == "none" or get_defence(defence).applies_to(head)


def label(defence: str) -> str:
    return NO_DEFENCE_LABEL if defence == "none" else DEFENCES[defence].label


def lgm_scores(head: LGMHead, feats: np.ndarray, labels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        ll = head.log_likelihood(torch.as_tensor(feats, dtype=torch.float32), torch.as_tensor(labels).long())
    return -ll.numpy().astype(np.float64)


def class_centroids(feats: np.ndarray, labels: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    return np.stack([feats[labels == c].mean(0) if np.any(labels == c) else np.zeros(feats.shape[1])
                     for c in range(n_classes)])


def centroid_scores(feats: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return np.linalg.norm(feats - centroids[labels], axis=1)


def knn_scores(feats: np.ndarray, labels: np.ndarray, k: int = 10) -> np.ndarray:
    """Share of each point's k nearest neighbours (itself excluded) carrying another label."""
    x = torch.as_tensor(feats, dtype=torch.float64)
    dist = torch.cdist(x, x)
    dist.fill_diagonal_(float("inf"))
    k = min(k, len(feats) - 1)
    nn = dist.topk(k, largest=False).indices.numpy()
    return (labels[nn] != labels[:, None]).mean(1)


def spectral_scores(feats: np.ndarray, labels: np.ndarray) -> np.ndarray:
    scores = np.zeros(len(feats))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        centred = feats[idx] - feats[idx].mean(0)
        if len(idx) < 2:
            continue
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        scores[idx] = (centred @ vt[0]) ** 2
    return scores


def ac_scores(feats: np.ndarray, labels: np.ndarray, dims: int = 10) -> np.ndarray:
    """Per class: PCA to ``dims`` components, then 2-means (as ART's ActivationDefence, with PCA in
    place of its ICA); members of the smaller cluster score 1 - its share of the class. Seeded and
    on one thread, so the same pool gets the same scores on any machine (the per-class problems are
    small: more threads only cost start-up and oversubscribe cores that parallel trials already use)."""
    scores = np.zeros(len(feats))
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 3:
            continue
        with threadpool_limits(limits=1):
            reduced = PCA(n_components=min(dims, len(idx), feats.shape[1]), random_state=0).fit_transform(feats[idx])
            assign = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(reduced)
        share = np.bincount(assign, minlength=2) / len(idx)
        small = int(np.argmin(share))
        scores[idx[assign == small]] = 1.0 - share[small]
    return scores


def threshold_at_fpr(clean_scores: np.ndarray, fpr: float) -> float:
    """The score above which only ``fpr`` of clean examples lie (flag when score > threshold)."""
    if not 0.0 < fpr < 1.0:
        raise ValueError("fpr must be in (0, 1)")
    return float(np.quantile(np.asarray(clean_scores, dtype=np.float64), 1.0 - fpr, method="higher"))


def chi2_threshold(head: LGMHead, fpr: float) -> float:
    """Model-based LGM threshold for identity covariance: 2 d_y ~ chi2(d), no clean data needed."""
    if head.covariance != "identity":
        raise ValueError("the chi-square threshold assumes identity covariance")
    d = head.feat_dim
    dist = 0.5 * chi2.ppf(1.0 - fpr, d)
    return float(dist + 0.5 * d * np.log(2 * np.pi))  # as a score: -log N = d_y + d/2 log 2 pi


def roc(clean_scores: np.ndarray, poison_scores: np.ndarray) -> dict:
    """ROC curve (poisons positive; one point per distinct score, from (0, 0)), its AUC, and the
    true-positive rate at 1% and 5% FPR with the threshold set on the clean scores."""
    clean_scores = np.asarray(clean_scores, dtype=np.float64)
    poison_scores = np.asarray(poison_scores, dtype=np.float64)
    if len(clean_scores) == 0 or len(poison_scores) == 0:
        raise ValueError("a ROC curve needs at least one clean and one poison score")
    s = np.concatenate([clean_scores, poison_scores])
    y = np.r_[np.zeros(len(clean_scores)), np.ones(len(poison_scores))]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    at = {f"tpr_at_fpr_{int(100 * f)}": float(np.mean(poison_scores > threshold_at_fpr(clean_scores, f)))
          for f in (0.01, 0.05)}
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": float(roc_auc_score(y, s)), **at}
