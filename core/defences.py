"""Poison filters on penultimate features: the LGM likelihood filter and the usual baselines.

Every defence maps (features, claimed labels) to a *suspicion score* per example, higher meaning
more likely a poison; a threshold turns scores into flags. Thresholds are set on clean training
data at a stated false-positive rate (``threshold_at_fpr``), so every defence throws away the same
share of clean data and the comparison is fair.

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

import numpy as np
import torch

from .lgm import LGMHead


@dataclass(frozen=True)
class DefenceSpec:
    """What the CLI, the experiments and the pages need to know about a filter."""

    name: str
    label: str  # the name a person reads
    needs_head: str | None  # "lgm": only on a model with that head
    summary: str


DEFENCES: dict[str, DefenceSpec] = {d.name: d for d in (
    DefenceSpec("lgm", "LGM likelihood (the paper)", "lgm",
                "how unlikely the image's feature is under the Gaussian of the class it claims"),
    DefenceSpec("centroid", "Distance to class centre", None,
                "how far the feature is from the average feature of the class it claims"),
    DefenceSpec("knn", "Deep k-NN", None, "how many of its 10 nearest neighbours carry another label"),
    DefenceSpec("spectral", "Spectral signatures", None,
                "how far the feature sticks out along its class's main direction of variation"),
    DefenceSpec("ac", "Activation clustering", None, "whether it falls in the smaller of two clusters of its class"),
)}
NO_DEFENCE_LABEL = "no filter"


def applicable(defence: str, head: str) -> str | None:
    """Why ``defence`` cannot filter for a model with ``head``, or None when it can ("none" always can)."""
    if defence == "none":
        return None
    spec = DEFENCES.get(defence)
    if spec is None:
        return f"unknown defence {defence!r}; choose one of none, {', '.join(DEFENCES)}"
    if spec.needs_head and spec.needs_head != head:
        return f"{spec.label} needs an {spec.needs_head.upper()} model"
    return None


def label(defence: str) -> str:
    return NO_DEFENCE_LABEL if defence == "none" else DEFENCES[defence].label


def lgm_scores(head: LGMHead, feats: np.ndarray, labels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        ll = head.log_likelihood(torch.as_tensor(feats, dtype=torch.float32), torch.as_tensor(labels).long())
    return -ll.numpy().astype(np.float64)


def class_centroids(feats: np.ndarray, labels: np.ndarray, n_classes: int = 10) -> np.ndarray:
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
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

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


def score(defence: str, feats: np.ndarray, labels: np.ndarray, *, head: LGMHead | None = None,
          centroids: np.ndarray | None = None, k: int = 10) -> np.ndarray:
    """Suspicion scores of one defence over a pool of training features and claimed labels.

    Keywords a defence does not use are ignored on purpose: the pipeline and the lab pass the
    model's head to every defence, whichever model it is."""
    feats = np.asarray(feats, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if defence == "lgm":
        if head is None or getattr(head, "kind", None) != "lgm":
            raise ValueError("the LGM filter needs an LGM model's head")
        return lgm_scores(head, feats, labels)
    if defence == "centroid":
        return centroid_scores(feats, labels, class_centroids(feats, labels) if centroids is None else centroids)
    if defence == "knn":
        return knn_scores(feats, labels, k)
    if defence == "spectral":
        return spectral_scores(feats, labels)
    if defence == "ac":
        return ac_scores(feats, labels)
    raise ValueError(f"unknown defence {defence!r}; choose one of {', '.join(DEFENCES)}")


def threshold_at_fpr(clean_scores: np.ndarray, fpr: float) -> float:
    """The score above which only ``fpr`` of clean examples lie (flag when score > threshold)."""
    if not 0.0 < fpr < 1.0:
        raise ValueError("fpr must be in (0, 1)")
    return float(np.quantile(np.asarray(clean_scores, dtype=np.float64), 1.0 - fpr, method="higher"))


def chi2_threshold(head: LGMHead, fpr: float) -> float:
    """Model-based LGM threshold for identity covariance: 2 d_y ~ chi2(d), no clean data needed."""
    from scipy.stats import chi2

    if head.covariance != "identity":
        raise ValueError("the chi-square threshold assumes identity covariance")
    d = head.feat_dim
    dist = 0.5 * chi2.ppf(1.0 - fpr, d)
    return float(dist + 0.5 * d * np.log(2 * np.pi))  # as a score: -log N = d_y + d/2 log 2 pi


def roc(clean_scores: np.ndarray, poison_scores: np.ndarray) -> dict:
    """ROC curve (poisons positive; one point per distinct score, from (0, 0)), its AUC, and the
    true-positive rate at 1% and 5% FPR with the threshold set on the clean scores."""
    from sklearn.metrics import roc_auc_score, roc_curve

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
