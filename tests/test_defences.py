"""Each defence flags planted outliers and keeps clean clusters; ROC/AUC against hand computation."""

import numpy as np
import pytest
import torch
from scipy.stats import chi2, mannwhitneyu, ncx2
from sklearn.metrics import auc, roc_auc_score

from core.defences import DEFENCES, chi2_threshold, get_defence, own_filter, roc, threshold_at_fpr
from core.lgm import LOGVAR_MAX, LOGVAR_MIN, FittedGaussians, LGMHead


def score(defence, feats, claimed, head=None, **settings):
    """A defence's scores of a pool, through its estimator (settings only where the defence has them)."""
    spec = get_defence(defence)
    mine = {k: v for k, v in settings.items() if k in spec.estimator.settings_type.knobs()}
    return spec.make(head, **mine).fit(feats, claimed).scores_


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


D, SHIFT = 16, 2.5  # poisons sit SHIFT sigma (Mahalanobis) from their claimed class's mean


@pytest.fixture(scope="module")
def near_pool():
    """Three classes with shared diagonal variances (8 wide dims, variance 9; 8 narrow ones, 0.25),
    400 clean points each, and 200 poisons claimed as class 0: class-0 draws moved SHIFT sigma
    towards class 1's mean, which differs in the narrow dims only. A poison is then an ordinary
    member of class 0 in Euclidean terms and only a likelihood that knows the variances sees it.
    Returns (features, claimed labels, number of clean points, an LGM head matching the data)."""
    rng = np.random.default_rng(0)
    var = np.r_[np.full(D // 2, 9.0), np.full(D // 2, 0.25)]
    means = np.zeros((3, D))
    means[1, D // 2:] = 4.0
    means[2, :D // 2] = 10.0
    clean = np.concatenate([rng.normal(means[c], np.sqrt(var), (400, D)) for c in range(3)])
    towards = means[1] - means[0]
    towards *= SHIFT / np.sqrt(np.sum(towards ** 2 / var))
    poisons = rng.normal(means[0] + towards, np.sqrt(var), (200, D))
    head = LGMHead(D, 3, covariance="diag")
    half = (LOGVAR_MAX - LOGVAR_MIN) / 2  # invert the head's bounded log-variance parametrisation
    with torch.no_grad():
        head.means.copy_(torch.as_tensor(means, dtype=torch.float32))
        head.logvar_raw.copy_(torch.as_tensor(half * np.arctanh(np.log(var) / half), dtype=torch.float32).expand(3, D))
    assert torch.allclose(head.variances()[0], torch.as_tensor(var, dtype=torch.float32), rtol=1e-4)
    return np.concatenate([clean, poisons]), np.r_[np.repeat([0, 1, 2], 400), np.zeros(200, int)], 1200, head


def test_likelihood_filter_beats_the_others_on_poisons_near_their_class(near_pool):
    feats, claimed, n_clean, head = near_pool
    res = {d: roc(s[:n_clean], s[n_clean:]) for d in DEFENCES
           for s in [score(d, feats, claimed, head=head)]}
    # under the model 2 d_y ~ chi2(16) for clean points and noncentral chi2(16, SHIFT^2) for poisons
    expected = ncx2.sf(chi2.ppf(0.95, D), D, SHIFT ** 2)  # 0.27; measured 0.305 (binomial sd 0.03)
    assert res["lgm"]["tpr_at_fpr_5"] == pytest.approx(expected, abs=0.1)
    for other in set(DEFENCES) - {"lgm"}:
        # measured: the others' TPR at 5% FPR <= 0.10 (gap >= 0.205), AUC <= 0.53 vs 0.744 (gap >= 0.218)
        assert res["lgm"]["tpr_at_fpr_5"] >= res[other]["tpr_at_fpr_5"] + 0.15, other
        assert res["lgm"]["auc"] >= res[other]["auc"] + 0.15, other


@pytest.mark.parametrize("defence", DEFENCES)
def test_auc_is_sklearns_and_the_rank_statistic(near_pool, defence):
    feats, claimed, n_clean, head = near_pool
    s = score(defence, feats, claimed, head=head)
    clean, poison = s[:n_clean], s[n_clean:]
    r = roc(clean, poison)
    y = np.r_[np.zeros(n_clean), np.ones(len(poison))]
    assert r["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # AUC = P(poison scores above clean) + 1/2 P(tie): the Mann-Whitney U statistic over n_clean * n_poison
    assert r["auc"] == pytest.approx(mannwhitneyu(poison, clean).statistic / (len(clean) * len(poison)), abs=1e-12)
    assert r["auc"] == pytest.approx(auc(r["fpr"], r["tpr"]), abs=1e-12)  # the curve the pages draw


def test_lgm_needs_lgm_head(pool):
    feats, claimed, _ = pool
    with pytest.raises(ValueError, match="LGM"):
        score("lgm", feats, claimed)
    with pytest.raises(ValueError, match="unknown defence"):
        score("magic", feats, claimed)
    assert DEFENCES["lgm"].why_not("softmax") and DEFENCES["lgm"].applies_to("lgm")
    assert own_filter("lgm") == "lgm" and own_filter("softmax") == "centroid"


@pytest.mark.parametrize("defence", DEFENCES)
def test_fit_sets_the_threshold_at_the_trusted_examples_fpr(pool, defence):
    """scikit-learn's shape: fit on the pool, threshold at 5% of the trusted (clean) part, flag above it."""
    feats, claimed, head = pool
    trusted = np.r_[np.ones(400, bool), np.zeros(3, bool)]
    rule = {"paper_rule": False} if "paper_rule" in DEFENCES[defence].estimator.settings_type.knobs() else {}
    f = get_defence(defence).make(head, **rule).fit(feats, claimed, trusted=trusted, fpr=0.05)
    assert f.rule_ == "fpr" and f.threshold_ == threshold_at_fpr(f.scores_[trusted], 0.05)
    assert np.array_equal(f.flags_, f.scores_ > f.threshold_) and np.array_equal(f.predict(), f.flags_)
    assert np.mean(f.flags_[trusted]) <= 0.05 and f.flags_[~trusted].all()
    with pytest.raises(ValueError, match="features must be"):
        get_defence(defence).make(head).fit(feats[:, 0], claimed)
    with pytest.raises(ValueError, match="trusted"):
        get_defence(defence).make(head).fit(feats, claimed, trusted=np.zeros(403, bool))


def test_a_setting_a_defence_does_not_have_is_refused():
    with pytest.raises(ValueError, match="not a setting"):
        get_defence("centroid").make(None, k=5)
    assert get_defence("knn").make(None, k=3).settings.k == 3


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


# --- the baselines' own rules, each on a constructed case whose answer is known -------------------

def test_deep_knn_removes_a_point_outvoted_by_its_neighbours_and_keeps_a_tie():
    """Peri et al.'s plurality rule: flagged exactly when another label has more votes among the k
    nearest neighbours than the point's own; a tie that includes its own label keeps it."""
    feats = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2], [10.15], [5.0], [4.0], [6.0], [4.1], [6.1]])
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 2, 0, 1, 0, 1])
    f = get_defence("knn").make(None, k=4).fit(feats, labels)
    # 10.15 (label 0) sits among four 1s: outvoted, removed. 5.0 (label 2): neighbours 4.0/6.0/4.1/6.1
    # carry 0, 1, 0, 1 -> two labels tie at 2 votes, neither its own: outvoted, removed.
    assert f.flags_[6] and f.flags_[7]
    # 4.0 (label 0): neighbours 4.1 (0), 5.0 (2), 6.0 (1), 6.1 (1) -> own 1, other 2: removed;
    # 0.0 (label 0): neighbours 0.1, 0.2 (0) and 4.0, 4.1 (0): kept
    assert f.flags_[8] and not f.flags_[0]
    tie = get_defence("knn").make(None, k=2).fit(np.array([[0.0], [1.0], [-1.0], [9.0]]), np.array([0, 0, 1, 1]))
    assert not tie.flags_[0]  # neighbours 1.0 (own label) and -1.0 (other): a tie keeps it
    assert f.scores_[6] == pytest.approx((4 - 0) / 4) and f.rule_ == "paper"


def test_spectral_signatures_remove_one_and_a_half_eps_of_each_class():
    """Tran et al.: per class, the ceil(1.5 eps n_c) largest projections on the top singular direction."""
    rng = np.random.default_rng(0)
    clean0 = rng.normal(0, 1, (100, 8))
    shifted = rng.normal(0, 1, (10, 8)) + np.r_[8.0, np.zeros(7)]  # 10 of class 0 far along one direction
    clean1 = rng.normal(20, 1, (50, 8))
    feats = np.concatenate([clean0, shifted, clean1])
    labels = np.r_[np.zeros(110, int), np.ones(50, int)]
    f = get_defence("spectral").make(None, eps=0.1).fit(feats, labels)
    assert f.flags_[:110].sum() == 17 and f.flags_[110:].sum() == 8  # ceil(16.5), ceil(7.5)
    assert f.flags_[100:110].all()  # every shifted point is among its class's removed
    assert get_defence("spectral").make(None, eps=0.0).fit(feats, labels).flags_.sum() == 0


def test_activation_clustering_removes_a_small_separated_cluster_only():
    """Chen et al. as ART analyses it: the smaller 2-means cluster of a class goes when it holds under
    35% of the class and the silhouette exceeds 0.1; a class that is one blob loses nothing."""
    rng = np.random.default_rng(0)
    blob0 = rng.normal(0, 1, (90, 12))
    planted = rng.normal(0, 0.3, (20, 12)) + 6.0  # 20 of class 0 in their own tight cluster
    blob1 = rng.normal(-10, 1, (120, 12))  # class 1: one Gaussian, 2-means splits it about in half
    feats = np.concatenate([blob0, planted, blob1])
    labels = np.r_[np.zeros(110, int), np.ones(120, int)]
    f = get_defence("ac").make(None).fit(feats, labels)
    assert np.array_equal(np.flatnonzero(f.flags_), np.arange(90, 110))
    assert f.scores_[90:110] == pytest.approx(np.full(20, 1 - 20 / 110))
    # the same planted cluster at 40% of its class is not "small": kept
    big = get_defence("ac").make(None).fit(np.concatenate([blob0[:30], planted]), np.zeros(50, int))
    assert not big.flags_.any()
    with pytest.raises(ValueError, match="paper's rule"):
        f.predict(np.zeros(3))


def test_likelihood_filter_on_classes_the_model_never_saw_uses_gaussians_fitted_on_the_pool():
    """The new-classes setting's LGM filter: class means and per-dimension variances estimated from
    the pool it filters (poisons included), scored as minus the diagonal Gaussian log-density."""
    rng = np.random.default_rng(1)
    # variances far below a trained LGM head's e^-4 floor must be kept as they are
    feats = np.concatenate([rng.normal(0, [1.0, 0.003], (300, 2)), rng.normal(5, [2.0, 0.5], (300, 2))])
    labels = np.repeat([0, 1], 300)
    head = FittedGaussians.fit(torch.as_tensor(feats), torch.as_tensor(labels), 2)
    s = get_defence("lgm").make(head).fit(feats, labels).scores_
    mu = np.stack([feats[labels == c].mean(0) for c in (0, 1)])
    var = np.stack([feats[labels == c].var(0, ddof=1) for c in (0, 1)])
    by_hand = 0.5 * ((feats - mu[labels]) ** 2 / var[labels]).sum(1) + 0.5 * np.log(2 * np.pi * var[labels]).sum(1)
    assert np.allclose(s, by_hand, rtol=1e-4, atol=1e-3)
