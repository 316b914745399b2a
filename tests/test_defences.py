"""Each defence flags planted outliers and keeps clean clusters; ROC/AUC against hand computation."""

import numpy as np
import pytest
import torch

from core.defences import DEFENCES, chi2_threshold, roc, score, threshold_at_fpr
from core.lgm import LGMHead


@pytest.fixture
def pool():
    """Two tight Gaussian clusters, plus 3 'poisons' labelled 0 sitting inside cluster 1."""
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0, 0.0, 0.0], [6.0, 6.0, 0.0, 0.0]])
    clean = np.concatenate([rng.normal(means[c], 1.0, (200, 4)) for c in (0, 1)])
    labels = np.repeat([0, 1], 200)
    poisons = rng.normal(means[1], 0.3, (3, 4))
    feats = np.concatenate([clean, poisons])
    claimed = np.concatenate([labels, [0, 0, 0]])
    head = LGMHead(4, 2)
    with torch.no_grad():
        head.means.copy_(torch.as_tensor(means, dtype=torch.float32))
    return feats, claimed, head


@pytest.mark.parametrize("defence", DEFENCES)
def test_planted_poisons_rank_on_top(pool, defence):
    feats, claimed, head = pool
    s = score(defence, feats, claimed, head=head, k=5)
    clean, poison = s[:-3], s[-3:]
    thr = threshold_at_fpr(clean, 0.05)
    assert np.all(poison > thr), defence
    assert np.mean(clean > thr) <= 0.05
    assert np.array_equal(s, score(defence, feats, claimed, head=head, k=5))  # deterministic


def test_lgm_needs_lgm_head(pool):
    feats, claimed, _ = pool
    with pytest.raises(ValueError, match="LGM"):
        score("lgm", feats, claimed)
    with pytest.raises(ValueError, match="unknown defence"):
        score("magic", feats, claimed)


def test_roc_hand_computed():
    r = roc(np.array([0.1, 0.4, 0.35]), np.array([0.8, 0.35]))
    # thresholds 0.8, 0.4, 0.35, 0.1 -> (fpr, tpr) = (0,.5), (1/3,.5), (2/3,1), (1,1)
    assert r["fpr"] == pytest.approx([0, 0, 1 / 3, 2 / 3, 1])
    assert r["tpr"] == pytest.approx([0, 0.5, 0.5, 1, 1])
    assert r["auc"] == pytest.approx(0.5 * 1 / 3 + 0.75 * 1 / 3 + 1 / 3)
    perfect = roc(np.array([0.0, 0.1]), np.array([1.0]))
    assert perfect["auc"] == 1.0 and perfect["tpr_at_fpr_1"] == 1.0


def test_chi2_threshold_matches_clean_rate():
    torch.manual_seed(0)
    head = LGMHead(8, 1)
    feats = (head.means.detach() + torch.randn(20000, 8)).numpy()
    s = score("lgm", feats, np.zeros(20000, dtype=int), head=head)
    assert np.mean(s > chi2_threshold(head, 0.05)) == pytest.approx(0.05, abs=0.01)
