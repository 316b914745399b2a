"""The LGM head's math against hand computations, its gradient, and its numerical safety."""

import math

import pytest
import torch

from core.lgm import LOGVAR_MAX, LOGVAR_MIN, LGMHead


def _head(covariance="identity", alpha=1.0, lam=0.1):
    head = LGMHead(feat_dim=2, n_classes=2, alpha=alpha, lam=lam, covariance=covariance)
    with torch.no_grad():
        head.means.copy_(torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    return head


def test_loss_matches_hand_computation():
    head = _head(alpha=1.0, lam=0.1)
    f = torch.tensor([[1.0, 1.0]])
    y = torch.tensor([0])
    # d_0 = 1/2 (1 + 1) = 1, d_1 = 1/2 (1 + 1) = 1; margin doubles d_0 -> logits (-2, -1)
    ce = -(-2.0) + math.log(math.exp(-2.0) + math.exp(-1.0))
    expected = ce + 0.1 * 1.0
    assert head.loss(f, y).item() == pytest.approx(expected, rel=1e-6)
    assert head.mahalanobis(f)[0].tolist() == pytest.approx([1.0, 1.0])


def test_diag_covariance_distance_and_log_det():
    head = _head("diag")
    with torch.no_grad():
        head.logvar_raw.zero_()
        head.logvar_raw[0, 0] = 0.5  # bounded through tanh: log-variance is 4 * tanh(0.5 / 4)
    lv = 4.0 * math.tanh(0.5 / 4.0)
    f = torch.tensor([[1.0, 0.0]])
    assert head.mahalanobis(f)[0, 0].item() == pytest.approx(0.5 * math.exp(-lv), rel=1e-6)
    assert head.half_log_det()[0].item() == pytest.approx(0.5 * lv, rel=1e-6)
    ll = head.log_likelihood(f, torch.tensor([0])).item()
    assert ll == pytest.approx(-0.5 * math.exp(-lv) - 0.5 * lv - math.log(2 * math.pi), rel=1e-6)


def test_margin_only_on_true_class():
    head = _head(alpha=0.5)
    f = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    y = torch.tensor([1, 0])
    plain, margin = head(f), head.margin_logits(f, y)
    mask = torch.nn.functional.one_hot(y, 2).bool()
    assert torch.allclose(margin[~mask], plain[~mask])
    assert torch.allclose(margin[mask], plain[mask] * 1.5)


class _LossOnly(torch.nn.Module):
    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, f, y):
        return self.head.loss(f, y)


def test_gradcheck_float64():
    torch.manual_seed(0)
    wrapper = _LossOnly(LGMHead(feat_dim=3, n_classes=4, covariance="diag").double())
    f = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    means = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    raw = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 1])

    def fn(feats, mu, lv):
        return torch.func.functional_call(wrapper, {"head.means": mu, "head.logvar_raw": lv}, (feats, y))

    assert torch.autograd.gradcheck(fn, (f, means, raw))


def test_log_variance_stays_bounded():
    head = _head("diag")
    with torch.no_grad():
        head.logvar_raw.fill_(-1e6)
    assert head.log_var().min().item() >= LOGVAR_MIN
    with torch.no_grad():
        head.logvar_raw.fill_(1e6)
    assert head.log_var().max().item() <= LOGVAR_MAX
    assert torch.isfinite(head.loss(torch.randn(4, 2), torch.tensor([0, 1, 0, 1])))


def test_likelihood_prefers_own_class():
    head = _head()
    f = torch.tensor([[0.1, 0.0]])
    assert head.log_likelihood(f, torch.tensor([0])) > head.log_likelihood(f, torch.tensor([1]))
    assert head(f).argmax(1).item() == 0


def test_threshold_rings_are_where_the_filter_score_equals_the_threshold():
    """A point on class c's ring (threshold_sigmas) scores exactly the threshold under c: inside kept, outside flagged."""
    import numpy as np

    from core.defences import lgm_scores
    from core.lgm import LGMHead

    torch.manual_seed(0)
    head = LGMHead(2, 3, covariance="diag")
    with torch.no_grad():
        head.means.normal_()
    threshold = 3.0
    s = head.threshold_sigmas(threshold)
    means, variances = (x.numpy() for x in head.gaussians())
    for c in range(3):
        direction = np.array([0.6, 0.8])
        on = means[c] + s[c] * np.sqrt(variances[c]) * direction
        scores = lgm_scores(head, np.stack([on, means[c] + 0.9 * (on - means[c]), means[c] + 1.1 * (on - means[c])]),
                            np.full(3, c))
        assert scores[0] == pytest.approx(threshold, abs=1e-4) and scores[1] < threshold < scores[2]
