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


def test_compare_defences_reports_the_chi2_threshold_for_identity_lgm():
    from core.lab import compare_defences
    from core.models import Classifier, default_config

    torch.manual_seed(0)
    model = Classifier(default_config("mnist", "lgm", 4, arch="resnet", width=16))
    means = model.head.means.detach()
    claimed = np.repeat(np.arange(10), 400)
    clean = (means[claimed] + torch.randn(len(claimed), 4)).numpy()
    planted = (means[:5] + 12.0).numpy()  # far outside every class
    feats = np.concatenate([clean, planted])
    is_poison = np.r_[np.zeros(len(clean), bool), np.ones(5, bool)]
    res = compare_defences(model, feats, np.r_[claimed, np.arange(5)], is_poison)
    assert [c["nominal_fpr"] for c in res["lgm"]["chi2"]] == [0.01, 0.05]
    for c in res["lgm"]["chi2"]:
        assert c["clean_flagged"] == pytest.approx(c["nominal_fpr"], abs=0.01)  # the features follow the model
        assert c["poisons_flagged"] == 1.0
    assert "chi2" not in res["centroid"]
