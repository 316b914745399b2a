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
- ``knn``: Deep k-NN (Peri et al. 2020): a point whose label is not the plurality label of its k
  nearest neighbours in the pool is removed (a tie that includes its own label keeps it). Its
  score is the margin (most frequent other label's count - own label's count) / k.
- ``spectral``: Spectral Signatures (Tran et al. 2018): per class, the squared projection of the
  centred feature on the class's top singular direction; the 1.5 eps n_c highest of each class
  are removed (eps: the assumed bound on the poisoned share of a class).
- ``ac``: Activation Clustering (Chen et al. 2018): per class, a 10-D projection (PCA, as ART's
  ``ActivationDefence`` offers) and 2-means; the smaller cluster is removed when it holds under
  35% of the class and the clustering's silhouette exceeds 0.1 (ART's relative-size and
  silhouette analysis). Score: 1 - the smaller cluster's share, for its members.

The three baselines flag by their paper's rule (``paper_rule``, their default): they each throw
away what their authors would, whatever that costs in clean data (reported beside them). With
``paper_rule=False`` they flag at the stated false-positive rate like the others, for a comparison
at equal clean loss. The ``lgm`` and ``centroid`` filters have no rule of their own beyond a
threshold and always use the false-positive rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.stats import chi2
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score, roc_curve, silhouette_score
from threadpoolctl import threadpool_limits

from .lgm import LGMHead, head_capabilities, heads_with
from .settings import NoSettings, Settings, knob


NO_DEFENCE_LABEL = "no filter"


_PAPER_RULE = "flag by the paper's own rule (false: flag at the experiment's false-positive rate instead)"


@dataclass(frozen=True)
class KnnSettings(Settings):
    k: int = knob(50, "neighbours that vote (Peri et al.: at least the poisons per class; the benchmark puts 25 "
                  "in one class)", 1, 10_000)
    paper_rule: bool = knob(True, _PAPER_RULE + ": remove a point whose label is not its neighbours' plurality")


@dataclass(frozen=True)
class SpectralSettings(Settings):
    eps: float = knob(0.1, "assumed bound on the poisoned share of a class (the benchmark: 25 of 250)", 0.0, 0.66)
    paper_rule: bool = knob(True, _PAPER_RULE + ": remove the 1.5 eps n_c highest scores of each class")


@dataclass(frozen=True)
class ACSettings(Settings):
    dims: int = knob(10, "PCA components before 2-means", 1, 4096, art="nb_dims")
    size_threshold: float = knob(0.35, "a cluster under this share of its class is suspect", 0.0, 0.5,
                                 art="size_threshold")
    silhouette_threshold: float = knob(0.1, "... if the class's 2-means silhouette exceeds this", -1.0, 1.0,
                                       art="silhouette_threshold")
    paper_rule: bool = knob(True, _PAPER_RULE + ": remove the smaller cluster where it is small and well separated")


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
        self.rule_ = "paper" if getattr(self.settings, "paper_rule", False) else "fpr"
        self.flags_ = self.paper_flags(features, labels) if self.rule_ == "paper" else self.scores_ > self.threshold_
        return self

    def paper_flags(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:  # pragma: no cover
        """The defence's own removal rule (after ``score_samples`` on the same pool)."""
        raise NotImplementedError

    def predict(self, scores: np.ndarray | None = None) -> np.ndarray:
        """True where an example is flagged: the fitted flags, or ``scores`` above the threshold
        (for a defence that flags by its paper's rule, only its own pool's flags exist)."""
        if scores is None:
            return self.flags_
        if self.rule_ == "paper":
            raise ValueError("this filter flags by its paper's rule: it has no threshold for other scores")
        return np.asarray(scores) > self.threshold_


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
    """``knn``: Deep k-NN's plurality vote of the k nearest neighbours."""

    settings_type = KnnSettings

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        self._margin = knn_margins(features, labels, self.settings.k)
        return self._margin

    def paper_flags(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return self._margin > 0  # another label outvotes its own; a tie with its own label keeps it


class SpectralFilter(Defence):
    """``spectral``: squared projection on the class's top singular direction."""

    settings_type = SpectralSettings

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return spectral_scores(features, labels)

    def paper_flags(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return top_share_per_class(self.scores_, labels, 1.5 * self.settings.eps)


class ActivationClustering(Defence):
    """``ac``: per class PCA then 2-means; the smaller cluster is suspect."""

    settings_type = ACSettings

    def score_samples(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        self._clusters = ac_clusters(features, labels, self.settings.dims)
        return _ac_scores_of(self._clusters, len(labels))

    def paper_flags(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        flags = np.zeros(len(labels), bool)
        for c in self._clusters:
            if c.share < self.settings.size_threshold and c.silhouette > self.settings.silhouette_threshold:
                flags[c.small] = True
        return flags


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
    DefenceSpec("knn", "Deep k-NN", "whether most of its 50 nearest neighbours carry another label", KnnFilter),
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


def knn_margins(feats: np.ndarray, labels: np.ndarray, k: int = 50) -> np.ndarray:
    """Per point: (count of the most frequent other label - count of its own label) among its k
    nearest neighbours (itself excluded), over k. Positive: its label is not the plurality."""
    x = torch.as_tensor(feats, dtype=torch.float64)
    dist = torch.cdist(x, x)
    dist.fill_diagonal_(float("inf"))
    k = min(k, len(feats) - 1)
    nn = dist.topk(k, largest=False).indices.numpy()
    n_labels = int(labels.max()) + 1
    counts = np.zeros((len(labels), n_labels))
    np.add.at(counts, (np.repeat(np.arange(len(labels)), k), labels[nn].ravel()), 1.0)
    own = counts[np.arange(len(labels)), labels]
    counts[np.arange(len(labels)), labels] = -1.0
    return (counts.max(1) - own) / k


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


def top_share_per_class(scores: np.ndarray, labels: np.ndarray, share: float) -> np.ndarray:
    """Flags the ceil(share x n_c) highest scores of each class (Tran et al.'s removal)."""
    flags = np.zeros(len(scores), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = min(len(idx), int(np.ceil(share * len(idx) - 1e-9)))
        if n:
            flags[idx[np.argsort(-scores[idx], kind="stable")[:n]]] = True
    return flags


@dataclass(frozen=True)
class _ClassClusters:
    small: np.ndarray  # pool indices of the smaller cluster's members
    share: float  # its share of the class
    silhouette: float  # of the class's 2-means on the projection (-1 where undefined)


def ac_clusters(feats: np.ndarray, labels: np.ndarray, dims: int = 10) -> list[_ClassClusters]:
    """Per class: PCA to ``dims`` components, then 2-means (as ART's ActivationDefence, with PCA,
    one of its reductions, in place of Chen et al.'s ICA). Seeded and on one thread, so the same
    pool gets the same clusters on any machine (the per-class problems are small: more threads only
    cost start-up and oversubscribe cores that parallel trials already use)."""
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 3:
            continue
        with threadpool_limits(limits=1):
            reduced = PCA(n_components=min(dims, len(idx), feats.shape[1]), random_state=0).fit_transform(feats[idx])
            assign = KMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(reduced)
        share = np.bincount(assign, minlength=2) / len(idx)
        small = int(np.argmin(share))
        sil = float(silhouette_score(reduced, assign)) if len(np.unique(assign)) == 2 else -1.0
        out.append(_ClassClusters(idx[assign == small], float(share[small]), sil))
    return out


def ac_scores(feats: np.ndarray, labels: np.ndarray, dims: int = 10) -> np.ndarray:
    """Members of each class's smaller 2-means cluster score 1 - its share of the class."""
    return _ac_scores_of(ac_clusters(feats, labels, dims), len(feats))


def _ac_scores_of(clusters: list[_ClassClusters], n: int) -> np.ndarray:
    scores = np.zeros(n)
    for c in clusters:
        scores[c.small] = 1.0 - c.share
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
