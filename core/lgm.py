"""The Large-Margin Gaussian Mixture head (Wan et al., CVPR 2018) and the plain softmax head.

LGM models the penultimate feature f of class k as N(mu_k, Lambda_k). With
d_k(f) = 1/2 (f - mu_k)^T Lambda_k^-1 (f - mu_k), the training logits are
-d_k(f) * (1 + alpha * [k == y]) - 1/2 log|Lambda_k| (margin on the true class only), and

    loss = CE(training logits, y) + lambda * mean_i (d_{y_i}(f_i) + 1/2 log|Lambda_{y_i}|).

The likelihood term is what makes features *actually* Gaussian per class, so a training example's
log-likelihood under its claimed label is a meaningful poison score: the paper's defence.

Diagonal log-variances are bounded smoothly to [LOGVAR_MIN, LOGVAR_MAX]: unbounded variances
collapse to zero under the likelihood term and the loss runs to -inf/NaN (a known failure of
public ports).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LOGVAR_MIN, LOGVAR_MAX = -4.0, 4.0


class SoftmaxHead(nn.Module):
    """A linear classifier on the features, trained with cross-entropy."""

    kind = "softmax"
    capabilities: frozenset = frozenset()

    def __init__(self, feat_dim: int, n_classes: int) -> None:
        super().__init__()
        self.feat_dim, self.n_classes = feat_dim, n_classes
        self.linear = nn.Linear(feat_dim, n_classes)

    @classmethod
    def from_config(cls, config) -> "SoftmaxHead":
        return cls(config.feat_dim, config.n_classes)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.linear(f)

    def loss(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.linear(f), y)


class LGMHead(nn.Module):
    """Gaussian class-conditionals on the features with a margin on the true class."""

    kind = "lgm"
    # class-conditional Gaussians: a likelihood to filter by, and a Mahalanobis term to attack
    capabilities: frozenset = frozenset({"gaussian"})

    def __init__(self, feat_dim: int, n_classes: int, alpha: float = 1.0, lam: float = 0.1,
                 covariance: str = "identity") -> None:
        super().__init__()
        if covariance not in ("identity", "diag"):
            raise ValueError("covariance must be 'identity' or 'diag'")
        self.feat_dim, self.n_classes, self.covariance = feat_dim, n_classes, covariance
        self.alpha, self.lam = float(alpha), float(lam)
        self.means = nn.Parameter(torch.randn(n_classes, feat_dim))
        # raw parameter -> bounded log-variance; zero raw maps to log-variance 0 (unit variance)
        self.logvar_raw = nn.Parameter(torch.zeros(n_classes, feat_dim),
                                       requires_grad=covariance == "diag")

    @classmethod
    def from_config(cls, config) -> "LGMHead":
        return cls(config.feat_dim, config.n_classes, config.alpha, config.lam, config.covariance)

    def log_var(self) -> torch.Tensor:
        """Per-class, per-dimension log-variance, inside [LOGVAR_MIN, LOGVAR_MAX]."""
        if self.covariance == "identity":
            return torch.zeros_like(self.logvar_raw)
        half = (LOGVAR_MAX - LOGVAR_MIN) / 2
        centre = (LOGVAR_MAX + LOGVAR_MIN) / 2
        return centre + half * torch.tanh(self.logvar_raw / half)

    def variances(self) -> torch.Tensor:
        return self.log_var().exp()

    def half_log_det(self) -> torch.Tensor:
        """1/2 log|Lambda_k| for each class, shape [K]."""
        return 0.5 * self.log_var().sum(dim=1)

    def mahalanobis(self, f: torch.Tensor) -> torch.Tensor:
        """d_k(f) = 1/2 (f - mu_k)^T Lambda_k^-1 (f - mu_k) for every class, shape [N, K]."""
        diff = f.unsqueeze(1) - self.means.unsqueeze(0)
        return 0.5 * (diff.pow(2) * torch.exp(-self.log_var()).unsqueeze(0)).sum(dim=2)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """Inference logits (no margin): the class log-posterior up to a constant."""
        return -self.mahalanobis(f) - self.half_log_det().unsqueeze(0)

    def _with_margin(self, dist: torch.Tensor, y: torch.Tensor, alpha: float | None) -> torch.Tensor:
        a = self.alpha if alpha is None else alpha
        scale = 1.0 + a * F.one_hot(y, self.n_classes).to(dist.dtype)
        return -dist * scale - self.half_log_det().unsqueeze(0)

    def margin_logits(self, f: torch.Tensor, y: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """Training logits: only the true class's distance is scaled by (1 + alpha)."""
        return self._with_margin(self.mahalanobis(f), y, alpha)

    def loss(self, f: torch.Tensor, y: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """Margin cross-entropy plus lambda times the likelihood regulariser (``alpha`` overrides
        the margin, e.g. during warm-up)."""
        dist = self.mahalanobis(f)
        likelihood = dist.gather(1, y[:, None]).squeeze(1) + self.half_log_det()[y]
        return F.cross_entropy(self._with_margin(dist, y, alpha), y) + self.lam * likelihood.mean()

    def log_likelihood(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log N(f; mu_y, Lambda_y) under the given (claimed) labels, shape [N]."""
        dist = self.mahalanobis(f).gather(1, y[:, None]).squeeze(1)
        return -dist - self.half_log_det()[y] - 0.5 * self.feat_dim * math.log(2 * math.pi)

    def gaussians(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(means [K, d], variances [K, d]) detached, for drawing ellipses and for defences."""
        return self.means.detach().clone(), self.variances().detach().clone()

    def threshold_sigmas(self, threshold: float) -> np.ndarray:
        """Per class, the radius s (in standard deviations) of the ellipse on which an example claiming
        that class scores exactly ``threshold`` (minus log-likelihood, the likelihood filter's score):
        inside it the filter keeps an example, outside it flags it. 0 where the whole class is flagged."""
        with torch.no_grad():
            m = threshold - self.half_log_det() - 0.5 * self.feat_dim * math.log(2 * math.pi)
        return np.sqrt(2.0 * np.clip(m.numpy().astype(np.float64), 0.0, None))


class FittedGaussians(nn.Module):
    """Class Gaussians estimated from labelled features (means and per-dimension variances), not
    learned: the LGM rule on classes an extractor never trained on (the new-classes setting), for
    its victim head (``victim.VICTIM_HEADS["gaussian"]``) and its likelihood filter. Unlike a
    trained diagonal LGM head, the variances are not bounded (features of unseen classes have
    many dimensions with variance far below the head's e^-4 floor); a class with no example is
    never chosen."""

    kind = "gaussian"
    capabilities: frozenset = frozenset({"gaussian"})
    covariance = "diag"
    VAR_FLOOR = 1e-8

    def __init__(self, means: torch.Tensor, variances: torch.Tensor, present: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("means", means.float())
        self.register_buffer("log_variances", variances.float().clamp_min(self.VAR_FLOOR).log())
        self.register_buffer("present", present.bool())
        self.n_classes, self.feat_dim = means.shape

    @classmethod
    def fit(cls, feats: torch.Tensor, labels: torch.Tensor, n_classes: int) -> "FittedGaussians":
        feats, labels = torch.as_tensor(feats).double(), torch.as_tensor(labels).long()
        d = feats.shape[1]
        means, var = torch.zeros(n_classes, d, dtype=torch.float64), torch.ones(n_classes, d, dtype=torch.float64)
        present = torch.zeros(n_classes, dtype=torch.bool)
        for c in range(n_classes):
            f = feats[labels == c]
            if len(f):
                means[c], present[c] = f.mean(0), True
            if len(f) > 1:
                var[c] = f.var(0)
        return cls(means, var, present).eval()

    def log_var(self) -> torch.Tensor:
        return self.log_variances

    def variances(self) -> torch.Tensor:
        return self.log_variances.exp()

    def mahalanobis(self, f: torch.Tensor) -> torch.Tensor:
        """1/2 (f - mu_k)^T Lambda_k^-1 (f - mu_k) for every class, shape [N, K]."""
        diff = f.unsqueeze(1) - self.means.unsqueeze(0)
        return 0.5 * (diff.pow(2) * torch.exp(-self.log_variances).unsqueeze(0)).sum(dim=2)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        logits = -self.mahalanobis(f) - 0.5 * self.log_variances.sum(1).unsqueeze(0)
        return logits.masked_fill(~self.present, float("-inf"))

    def log_likelihood(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log N(f; mu_y, Lambda_y) under the given (claimed) labels, shape [N]."""
        dist = self.mahalanobis(f).gather(1, y[:, None]).squeeze(1)
        return -dist - 0.5 * self.log_variances.sum(1)[y] - 0.5 * self.feat_dim * math.log(2 * math.pi)

    def gaussians(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.means.clone(), self.variances().clone()


HEAD_TYPES: dict[str, type[nn.Module]] = {"softmax": SoftmaxHead, "lgm": LGMHead}


def head_capabilities(head: str) -> frozenset:
    """What a model head offers beyond classifying (``"gaussian"``: class Gaussians), by name, so an
    attack or a defence says what it needs instead of naming a head."""
    if head not in HEAD_TYPES:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEAD_TYPES)}")
    return HEAD_TYPES[head].capabilities


def heads_with(capabilities: frozenset) -> list[str]:
    return [name for name, cls in HEAD_TYPES.items() if capabilities <= cls.capabilities]
