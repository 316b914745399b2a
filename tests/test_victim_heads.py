"""Victim heads of the registry: the benchmark's linear recipe, nearest class mean, the warm head."""

import numpy as np
import pytest
import torch

from core.attacks import craft
from core.data import stratified_sample
from core.pipeline import plan_trial
from core.victim import (VICTIM_HEADS, HeadData, LinearHeadSettings, NoHeadSettings, Retraining, fit_linear_head,
                         fit_nearest_mean, retrain_victim)


def _blobs(n=60, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 5, (k, d))
    y = np.repeat(np.arange(k), n)
    x = means[y] + rng.normal(0, 1, (len(y), d))
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y), torch.as_tensor(means, dtype=torch.float32)


@pytest.mark.parametrize("name", list(VICTIM_HEADS))
def test_every_victim_head_fits_separable_blobs(tiny_lgm, name):
    feats, labels, _ = _blobs(d=tiny_lgm.config.feat_dim, k=10, n=20)
    head = VICTIM_HEADS[name].fit(tiny_lgm.head, HeadData(feats, labels), VICTIM_HEADS[name].settings(), 0)
    with torch.no_grad():
        acc = float((head(feats).argmax(1) == labels).float().mean())
    assert acc > 0.9, name
    assert VICTIM_HEADS[name].label and VICTIM_HEADS[name].summary


def test_linear_head_is_reinitialised_and_seeded(tiny_lgm):
    """The benchmark victim starts from a fresh layer, not the trained head, and the seed fixes it."""
    from core.lgm import SoftmaxHead

    trained = SoftmaxHead(8, 10)
    torch.nn.init.constant_(trained.linear.weight, 0.5)
    feats, labels, _ = _blobs(d=8, k=10, n=10)
    s = LinearHeadSettings(epochs=1, lr=1e-6)  # barely moves: what is left is the initialisation
    a = fit_linear_head(trained, HeadData(feats, labels), s, seed=3)
    b = fit_linear_head(trained, HeadData(feats, labels), s, seed=3)
    c = fit_linear_head(trained, HeadData(feats, labels), s, seed=4)
    assert not torch.allclose(a.linear.weight, trained.linear.weight)
    assert torch.equal(a.linear.weight, b.linear.weight) and not torch.equal(a.linear.weight, c.linear.weight)
    assert torch.equal(trained.linear.weight, torch.full_like(trained.linear.weight, 0.5))  # untouched


def test_linear_head_lr_drops_at_the_milestone(monkeypatch):
    seen = []
    real = torch.optim.SGD.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", spy)
    from core.lgm import SoftmaxHead

    feats, labels, _ = _blobs(n=10)
    fit_linear_head(SoftmaxHead(4, 3), HeadData(feats, labels), LinearHeadSettings(epochs=4, milestone=2, batch_size=30), 0)
    assert seen == [0.01] * 2 + [0.001] * 2


def test_nearest_mean_is_the_class_means():
    feats, labels, _ = _blobs()
    from core.lgm import SoftmaxHead

    head = fit_nearest_mean(SoftmaxHead(4, 3), HeadData(feats, labels), NoHeadSettings())
    for c in range(3):
        assert torch.allclose(head.means[c], feats[labels == c].mean(0))
    point = head.means[1:2] + 0.1
    assert int(head(point).argmax()) == 1


def test_augmented_head_runs_images_through_the_frozen_extractor(tiny_lgm, mnist_demo):
    calls = []

    def extract(x):
        calls.append(tuple(x.shape))
        return tiny_lgm.features(x)

    imgs = mnist_demo.x_train[:64].astype(np.float32) / 255
    with torch.no_grad():
        feats = tiny_lgm.features(torch.as_tensor(imgs).permute(0, 3, 1, 2))
    s = LinearHeadSettings(epochs=2, batch_size=32, augment=True)
    data = HeadData(feats, torch.as_tensor(mnist_demo.y_train[:64]), imgs, extract)
    a = fit_linear_head(tiny_lgm.head, data, s, seed=1)
    assert calls == [(32, 1, 28, 28)] * 4  # every batch of every epoch, augmented afresh
    b = fit_linear_head(tiny_lgm.head, data, s, seed=1)
    assert torch.equal(a.linear.weight, b.linear.weight)
    with pytest.raises(ValueError, match="images"):
        fit_linear_head(tiny_lgm.head, HeadData(feats, data.labels), s, seed=1)


def test_benchmark_plan_has_250_per_class_with_the_poisons_in_the_bases_place(mnist_demo):
    """The poisoning benchmark's protocol: 2500 images, 250 per class; the bases leave the clean
    set so that the poisons take their place."""
    plan = plan_trial(mnist_demo, (0, 1), np.arange(len(mnist_demo.y_test)), n_poisons=25, n_clean=1000,
                      n_test=100, bases_from_clean=True)
    counts = np.bincount(mnist_demo.y_train[plan.clean_indices], minlength=10)
    assert counts[plan.base_class] == 100 - 25 and np.all(np.delete(counts, plan.base_class) == 100)
    assert not set(plan.base_indices) & set(plan.clean_indices)
    assert np.all(mnist_demo.y_train[plan.base_indices] == plan.base_class)


def test_a_retraining_names_a_head_and_takes_only_its_settings():
    with pytest.raises(ValueError, match="unknown victim head"):
        Retraining(head="magic")
    with pytest.raises(ValueError, match="takes"):
        Retraining(head="ncm", head_settings=LinearHeadSettings())
    assert Retraining(head="linear").head_settings == LinearHeadSettings()


def test_every_victim_head_retrains_a_transfer_victim(tiny_lgm, mnist_demo):
    bases = mnist_demo.x_train[np.flatnonzero(mnist_demo.y_train == 8)[:2]]
    target = mnist_demo.x_test[np.flatnonzero(mnist_demo.y_test == 3)[:1]]
    p = craft(tiny_lgm, "fc", bases, target, np.full(2, 8), 3, iters=5, eps=0.1)
    keep = stratified_sample(mnist_demo.y_train, 200, np.random.default_rng(0))
    for name in VICTIM_HEADS:
        settings = LinearHeadSettings(epochs=2) if name == "linear" else None
        out, net = retrain_victim(tiny_lgm, p, (mnist_demo.x_train[keep], mnist_demo.y_train[keep]),
                                  (mnist_demo.x_test[:100], mnist_demo.y_test[:100]),
                                  Retraining(head=name, head_settings=settings))
        assert 0.0 <= out.clean_acc_after <= 1.0 and len(out.probs_after) == 10, name


def test_nearest_mean_never_predicts_a_class_without_examples():
    """Many rows (torch.cdist's matrix path) and a class missing from the retraining set."""
    from core.lgm import SoftmaxHead

    feats, labels, _ = _blobs(n=30, k=3)
    keep = labels != 2
    head = fit_nearest_mean(SoftmaxHead(4, 3), HeadData(feats[keep], labels[keep]), NoHeadSettings())
    with torch.no_grad():
        logits = head(feats)
    assert not torch.isnan(logits).any() and set(logits.argmax(1).tolist()) <= {0, 1}


def test_weight_decay_is_refused_on_a_head_without_weights(tiny_lgm):
    from core.victim import WarmHeadSettings

    r = Retraining(head_settings=WarmHeadSettings(weight_decay=0.01))
    assert "softmax" in r.why_not(tiny_lgm.head)
    feats, labels, _ = _blobs(d=tiny_lgm.config.feat_dim, k=10, n=5)
    with pytest.raises(ValueError, match="weight decay"):
        r.refit_head(tiny_lgm.head, HeadData(feats, labels))


def test_settings_take_numpy_scalars_and_refuse_a_string_for_a_bool():
    from core.attacks import settings_for

    assert settings_for("fc", "mnist", iters=np.int64(50)).iters == 50
    with pytest.raises(ValueError, match="true or false"):
        LinearHeadSettings(augment="false")


def test_fitted_gaussians_recover_the_classes_and_decide_by_likelihood():
    """``FittedGaussians.fit``: class means and per-dimension variances of labelled features; the
    ``gaussian`` victim head and the new-classes likelihood filter both read them."""
    from core.lgm import FittedGaussians
    from core.victim import HeadData, VICTIM_HEADS

    g = torch.Generator().manual_seed(0)
    means = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    scales = torch.tensor([[1.0, 0.01], [0.5, 2.0], [1.5, 1.0]])  # 0.01: variance 1e-4, under a trained head's floor
    labels = torch.arange(3).repeat_interleave(4000)
    feats = means[labels] + scales[labels] * torch.randn(len(labels), 2, generator=g)
    head = FittedGaussians.fit(feats, labels, 4)  # class 3 has no example
    assert torch.allclose(head.means[:3], means, atol=0.06)
    assert torch.allclose(head.variances()[:3].sqrt(), scales, rtol=0.04)
    pred = head(feats).argmax(1)
    assert (pred == labels).float().mean() > 0.97 and not (pred == 3).any()
    # the likelihood is the Gaussian's density: a point at the mean beats one 3 sd out, per class
    ll = head.log_likelihood(torch.stack([means[1], means[1] + 3 * scales[1]]), torch.tensor([1, 1]))
    expected = -0.5 * torch.tensor([0.0, 18.0]) - torch.log(scales[1]).sum() - np.log(2 * np.pi)
    assert torch.allclose(ll, expected, atol=0.1)
    victim = VICTIM_HEADS["gaussian"].fit(head, HeadData(feats, labels, n_classes=3), VICTIM_HEADS["gaussian"].settings(), 0)
    assert victim.n_classes == 3 and (victim(feats).argmax(1) == pred).all()


def test_a_new_head_takes_the_victims_classes_and_the_warm_head_refuses_new_classes():
    from core.lgm import SoftmaxHead
    from core.victim import HeadData, LinearHeadSettings, Retraining, fit_linear_head

    old = SoftmaxHead(4, 5)
    feats, labels = torch.randn(60, 4), torch.arange(3).repeat(20)
    new = fit_linear_head(old, HeadData(feats, labels, n_classes=3), LinearHeadSettings(epochs=2), seed=0)
    assert new(feats).shape == (60, 3)
    assert "other classes" in Retraining(head="warm").why_not(old, new_classes=True)
    assert Retraining(head="warm").why_not(old) is None
    assert Retraining(head="linear").why_not(old, new_classes=True) is None
