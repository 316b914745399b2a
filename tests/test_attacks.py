"""Poison crafting and victim retraining on tiny models (seconds, not minutes)."""

import numpy as np
import pytest
import torch

from core.attacks import ATTACKS, Poisons, craft, feature_collision, poison_frogs, polytope, settings_for
from core.models import Classifier, default_config
from core.train import TrainConfig, fit
from core.victim import Retraining, retrain_victim


@pytest.fixture(scope="module")
def tiny(mnist_demo):
    """A small ResNet on MNIST, trained for a few seconds; softmax and LGM heads."""
    models = {}
    for head in ("softmax", "lgm"):
        torch.manual_seed(0)
        m = Classifier(default_config("mnist", head, 16, arch="resnet", depth=1, width=8))
        fit(m, mnist_demo.x_train, mnist_demo.y_train, TrainConfig(epochs=3, batch_size=64, lr=0.05), progress=False)
        models[head] = m.eval()
    return models


def _pair(ds, target_class=3, base_class=8, n=4):
    ti = int(np.flatnonzero(ds.y_test == target_class)[0])
    bi = np.flatnonzero(ds.y_train == base_class)[-n:]
    return ds.x_train[bi], ds.x_test[ti:ti + 1], np.full(n, base_class), target_class


def _weights(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def test_feature_distance_falls(tiny, mnist_demo):
    bases, target, bl, tl = _pair(mnist_demo)
    p = feature_collision(tiny["softmax"], bases, target, bl, tl, eps=0.3, iters=60, record_every=5)
    assert np.all(np.diff(p.traj_objective[:-1], axis=0) <= 1e-6)  # each poison's best so far: monotone
    start = np.linalg.norm(p.traj_features[0] - p.target_feature, axis=1)
    assert np.all(p.final_feature_distance < 0.7 * start)
    assert p.traj_features.shape == (len(p.traj_iters), 4, 16)


@pytest.mark.slow
def test_frogs_objective_monotone_and_beta_keeps_poison_near_base(tiny, mnist_demo):
    bases, target, bl, tl = _pair(mnist_demo, n=2)
    p = poison_frogs(tiny["softmax"], bases, target, bl, tl, iters=40, beta0=0.0, record_every=5)
    assert np.all(np.diff(p.traj_objective[:-1], axis=0) <= 1e-6)  # accepted steps only
    dists = []
    for beta0 in (0.0, 1e-2, 10.0):
        q = poison_frogs(tiny["softmax"], bases, target, bl, tl, iters=40, beta0=beta0)
        dists.append(np.mean(q.perturbation()["l2"]))
    assert dists[0] > dists[1] > dists[2]


@pytest.mark.parametrize("attack", list(ATTACKS))  # every attack of the registry, a new one too
@pytest.mark.parametrize("eps", [0.05, 8 / 255])
def test_budget_holds_exactly_on_8bit_pixels(tiny, mnist_demo, attack, eps):
    bases, target, bl, tl = _pair(mnist_demo)
    p = craft(tiny["lgm"], attack, bases, target, bl, tl, iters=20, eps=eps)
    delta = np.abs(p.poisons - p.bases)
    assert delta.max() <= eps + 1e-6 and delta.max() > 0
    assert p.poisons.min() >= 0.0 and p.poisons.max() <= 1.0
    assert np.allclose(p.poisons * 255, np.round(p.poisons * 255), atol=1e-3)  # storable as 8-bit images


@pytest.mark.slow
@pytest.mark.parametrize("attack", ["bp", "cp"])
def test_polytope_moves_an_all_black_base(tiny, mnist_demo, attack):
    """Every pixel of an all-black base sits at the lower bound: a clamp inside the objective would
    give them zero gradient and the poisons would never move."""
    _, target, bl, tl = _pair(mnist_demo, n=3)
    black = np.zeros((3, 28, 28, 1), np.uint8)
    p = craft(tiny["softmax"], attack, black, target, bl, tl, iters=40, eps=0.3, record_every=40)
    assert p.poisons.max() > 0.1
    assert p.traj_objective[-1, 0] < 0.9 * p.traj_objective[0, 0]


def test_frogs_opacity_blends_target_into_start(tiny, mnist_demo):
    bases, target, bl, tl = _pair(mnist_demo, n=1)
    p = poison_frogs(tiny["softmax"], bases, target, bl, tl, iters=1, opacity=1.0, beta0=1e9)
    assert np.abs(p.poisons - target.astype(np.float32) / 255).max() < 1e-2


@pytest.mark.slow
def test_batched_equals_one_by_one(tiny, mnist_demo):
    bases, target, bl, tl = _pair(mnist_demo, n=3)
    batch = feature_collision(tiny["softmax"], bases, target, bl, tl, eps=0.2, iters=30)
    singles = [feature_collision(tiny["softmax"], bases[i:i + 1], target, bl[i:i + 1], tl, eps=0.2, iters=30)
               for i in range(3)]
    stacked = np.concatenate([s.poisons for s in singles])
    assert np.mean(np.abs(batch.poisons - stacked) > 1.5 / 255) < 0.01  # equal up to 8-bit rounding
    assert np.allclose(batch.final_feature_distance, [s.final_feature_distance[0] for s in singles], rtol=5e-2)


@pytest.mark.slow
def test_same_seed_same_poison(tiny, mnist_demo):
    bases, target, bl, tl = _pair(mnist_demo, n=2)
    a = craft(tiny["lgm"], "fc-adaptive", bases, target, bl, tl, iters=20, eps=0.1, restarts=2, seed=3)
    b = craft(tiny["lgm"], "fc-adaptive", bases, target, bl, tl, iters=20, eps=0.1, restarts=2, seed=3)
    assert np.array_equal(a.poisons, b.poisons)


@pytest.mark.slow
def test_restarts_never_worse(tiny, mnist_demo):
    bases, target, bl, tl = _pair(mnist_demo, n=2)
    one = feature_collision(tiny["softmax"], bases, target, bl, tl, eps=0.1, iters=30, restarts=1)
    three = feature_collision(tiny["softmax"], bases, target, bl, tl, eps=0.1, iters=30, restarts=3)
    assert np.all(three.traj_objective[-2] <= one.traj_objective[-2] + 1e-5)


@pytest.mark.slow
def test_adaptive_attack_trades_collision_for_likelihood(tiny, mnist_demo):
    bases, target, bl, tl = _pair(mnist_demo, n=3)
    model = tiny["lgm"]
    plain = craft(model, "fc", bases, target, bl, tl, iters=80, eps=0.3)
    aware = craft(model, "fc-adaptive", bases, target, bl, tl, iters=80, eps=0.3, adaptive_weight=5.0)
    labels = torch.as_tensor(bl)

    def loglik(p: Poisons) -> float:
        f = torch.as_tensor(p.traj_features[-1])
        with torch.no_grad():
            return float(model.head.log_likelihood(f, labels).mean())

    assert loglik(aware) > loglik(plain)
    assert aware.final_feature_distance.mean() > plain.final_feature_distance.mean()
    with pytest.raises(ValueError, match="LGM"):
        craft(tiny["softmax"], "fc-adaptive", bases, target, bl, tl, iters=5, eps=0.1)


@pytest.mark.slow
def test_convex_polytope_coefficients_on_simplex(tiny, mnist_demo):
    bases, target, bl, tl = _pair(mnist_demo, n=4)
    p = polytope(tiny["softmax"], bases, target, bl, tl, mode="convex", iters=30, eps=0.3)
    c = np.array(p.params["coefficients"])
    assert c.min() >= 0 and abs(c.sum() - 1) < 1e-5
    assert p.traj_objective[-1, 0] < p.traj_objective[0, 0]
    assert not np.allclose(c, 0.25)  # the weights moved off uniform: CP optimises them
    bp = polytope(tiny["softmax"], bases, target, bl, tl, mode="bullseye", iters=30, eps=0.3)
    assert np.array_equal(bp.params["coefficients"], np.full(4, 0.25, np.float32))  # BP: the plain mean


def test_save_load_roundtrip(tiny, mnist_demo, tmp_path):
    bases, target, bl, tl = _pair(mnist_demo, n=2)
    p = craft(tiny["softmax"], "bp", bases, target, bl, tl, iters=10, eps=0.1)
    q = Poisons.load(p.save(tmp_path / "p.npz"))
    assert np.array_equal(p.poisons, q.poisons) and q.params == p.params and q.target_label == tl


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["transfer", "end2end"])
def test_retraining_never_changes_shared_model(tiny, mnist_demo, setting):
    bases, target, bl, tl = _pair(mnist_demo, n=2)
    model = tiny["lgm"]
    before = _weights(model)
    p = craft(model, "fc", bases, target, bl, tl, iters=10, eps=0.1)
    outcome, victim = retrain_victim(model, p, (mnist_demo.x_train[:200], mnist_demo.y_train[:200]),
                                     (mnist_demo.x_test[:100], mnist_demo.y_test[:100]),
                                     Retraining(setting=setting, epochs=1))
    assert all(torch.equal(a, b) for a, b in zip(before, _weights(model)))
    assert victim is not model and outcome.n_poisons == 2 and len(outcome.probs_after) == 10


@pytest.mark.slow
def test_tiny_transfer_attack_succeeds(tiny, mnist_demo):
    """Feature collision with a handful of poisons flips the target in the transfer setting."""
    from core.models import predict_logits

    model = tiny["softmax"]
    pred = predict_logits(model, mnist_demo.x_test[:200]).argmax(1).numpy()
    ti = int(np.flatnonzero((mnist_demo.y_test[:200] == 3) & (pred == 3))[0])  # a correctly classified 3
    target = mnist_demo.x_test[ti:ti + 1]
    bases = mnist_demo.x_train[np.flatnonzero(mnist_demo.y_train == 8)[-8:]]
    p = craft(model, "fc", bases, target, np.full(8, 8), 3, iters=300, eps=1.0)  # unconstrained
    outcome, _ = retrain_victim(model, p, (mnist_demo.x_train[:300], mnist_demo.y_train[:300]),
                                (mnist_demo.x_test[:200], mnist_demo.y_test[:200]))
    assert outcome.pred_before == 3
    assert outcome.success and outcome.pred_after == 8


def test_settings_for_gives_each_attack_its_own_knobs_and_the_data_sets_defaults():
    from core.attacks import default_eps

    fc = settings_for("fc-adaptive", "mnist", trial_seed=2, iters=100, adaptive_weight=5.0)
    assert fc.to_dict() == {"iters": 100, "record_every": 1, "eps": default_eps("mnist"), "lr": 0.1, "restarts": 1,
                            "seed": 2, "patience": 20, "adaptive_weight": 5.0, "stealth": "likelihood"}
    assert "adaptive_weight" not in settings_for("fc", "mnist", iters=100).to_dict()
    assert settings_for("bp", "cifar10", iters=50).eps == default_eps("cifar10") == 8 / 255
    assert settings_for("cp", "mnist", trial_seed=3, iters=50, eps=0.1).to_dict() == {
        "iters": 50, "record_every": 1, "eps": 0.1, "lr": 0.01, "patience": None}  # deterministic: no seed
    assert settings_for("fc-frogs", "mnist", iters=50, beta0=9.0).beta0 == 9.0
    with pytest.raises(ValueError, match="has no setting beta0"):
        settings_for("cp", "mnist", beta0=9.0)  # a knob the attack does not have is an error, not ignored
    with pytest.raises(ValueError, match="unknown attack"):
        settings_for("magic", "mnist")
    with pytest.raises(ValueError, match="restarts must be in"):
        settings_for("fc", "mnist", restarts=0)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_registry_entry_is_complete(name):
    """Label, summary, settings with help and ranges on every knob, a solver, and the head rule."""
    entry = ATTACKS[name]
    assert entry.label and entry.summary and callable(entry.solver)
    for f in entry.settings.knobs().values():
        assert f.metadata["help"], f.name
    assert entry.applies_to("lgm")  # every attack runs against the Gaussian model
    if entry.applies_to("softmax"):
        assert entry.why_not("softmax") is None and entry.for_head("softmax") is entry
    else:
        assert "LGM" in entry.why_not("softmax") and entry.for_head("softmax").applies_to("softmax")


def test_early_stop_returns_the_best_iterate_seen(tiny, mnist_demo, monkeypatch):
    """Every iterate the attack evaluates is recorded; the early-stopped result is the best of them,
    and running on from the same seed only adds iterates (same path up to the stop, never worse)."""
    import core.attacks as attacks

    seen: list[torch.Tensor] = []
    shipped = attacks._frozen

    def recording(model):
        frozen = shipped(model)
        features = frozen.features

        def record(x):
            f = features(x)
            seen.append(f.detach().clone())
            return f
        frozen.features = record
        return frozen

    monkeypatch.setattr(attacks, "_frozen", recording)
    model = tiny["softmax"]
    bases, target, bl, tl = _pair(mnist_demo, n=1)
    kw = dict(eps=0.05, iters=80, record_every=1)
    early = feature_collision(model, bases, target, bl, tl, patience=5, **kw)
    n = early.params["iterations_run"]
    assert n < 80  # it did stop early
    ft = torch.as_tensor(early.target_feature)
    # calls: the target, the base, one per iteration, the 8-bit poison
    assert len(seen) == n + 3
    losses = torch.stack([(f - ft).pow(2).sum(1) for f in seen[1:-1]])
    assert np.allclose(early.traj_objective[-2], losses.min(0).values.numpy(), rtol=1e-6)
    seen.clear()
    full = feature_collision(model, bases, target, bl, tl, patience=None, **kw)
    assert full.params["iterations_run"] == 80
    assert np.allclose(full.traj_objective[n], early.traj_objective[-2], rtol=1e-6)
    assert np.all(full.traj_objective[-2] <= early.traj_objective[-2] + 1e-6)


@pytest.mark.parametrize("attack", ["bp", "cp", "cm"])
def test_polytope_early_stop_keeps_the_best_iterate_which_a_shorter_run_ends_on(tiny, mnist_demo, attack):
    """With ``patience`` the polytope solvers stop on a plateau and keep the iterate with the
    lowest objective seen; the trajectory up to it is the full run's, so a run of exactly that
    many steps (no early stop: the last iterate) returns the same poisons, bit for bit. CP's
    convex weights come with it."""
    bases, target, bl, tl = _pair(mnist_demo, n=4)
    model = tiny["lgm" if attack == "cm" else "softmax"]
    kw = dict(eps=0.3, lr=0.2, record_every=1, iters=300)  # a large step: it plateaus in 300
    early = craft(model, attack, bases, target, bl, tl, patience=3, **kw)
    stop = early.params["iterations_run"]
    assert stop < 300 and early.params["patience"] == 3  # it did stop early
    objective = early.traj_objective[:-1, 0]  # one record per step 0..stop, then the saved poisons'
    assert list(early.traj_iters[:-1]) == list(range(stop + 1))
    best = int(np.argmin(objective))
    short = craft(model, attack, bases, target, bl, tl, patience=None, **{**kw, "iters": best})
    assert np.array_equal(short.poisons, early.poisons)
    assert np.array_equal(short.params["coefficients"] if attack != "cm" else 0,
                          early.params["coefficients"] if attack != "cm" else 0)
    full = craft(model, attack, bases, target, bl, tl, patience=None, **kw)
    assert full.params["iterations_run"] == 300 and full.params["patience"] is None
    assert np.allclose(full.traj_objective[:stop + 1, 0], objective, rtol=1e-6)  # the same path until the stop


def test_plateau_stops_after_patience_checks_without_a_0_1_percent_gain():
    """The shared early stop: the running best must fall by 0.1% to reset the count; a spike
    (a worse value) neither resets it nor becomes the kept iterate."""
    from core.attacks import _Plateau

    p = _Plateau(2)
    seen = [(p.stalled(torch.tensor(v)), p.new_best) for v in (10.0, 9.0, 8.9999, 50.0, 8.5, 8.499, 8.4995)]
    assert seen == [(False, True), (False, True), (False, True), (True, False), (False, True), (False, True),
                    (True, False)]
    assert not any(_Plateau(None).stalled(torch.tensor(1.0)) for _ in range(10))


def test_the_crafting_copy_of_a_resnet_folds_its_batch_norms_and_computes_the_same_features():
    """Speed step of the crafting scaffold (bench/bench_bp.py): batch norms folded into the
    convolutions, weights channels-last; same features, the shared model untouched."""
    import torch

    from core.attacks import _frozen
    from core.models import Classifier, default_config

    torch.manual_seed(0)
    model = Classifier(default_config("cifar10", "softmax", 8, depth=1)).eval()
    with torch.no_grad():  # batch norms with non-trivial statistics, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    frozen = _frozen(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.extractor.modules())
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    assert torch.allclose(frozen.features(x), model.features(x), atol=1e-5)
    (g1,) = torch.autograd.grad(frozen.features(x).sum(), x)
    (g2,) = torch.autograd.grad(model.features(x).sum(), x)
    assert torch.allclose(g1, g2, atol=1e-5)
    assert all(p.requires_grad for p in model.parameters()) and any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_defence_aware_term_is_the_filters_own_score_and_its_gradient_moves_it(tiny, mnist_demo):
    """The adaptive term is the LGM filter's statistic (minus log-likelihood up to a constant), and
    its input gradient predicts the score's change (finite differences), so no gradient is masked."""
    from core.defences import lgm_scores

    import copy

    model = copy.deepcopy(tiny["lgm"]).eval().double()  # double precision: a finite difference that means something
    bases, _, bl, _ = _pair(mnist_demo, n=2)
    x = torch.as_tensor(bases, dtype=torch.float64).permute(0, 3, 1, 2) / 255.0
    y = torch.as_tensor(bl).long()

    def term(z: torch.Tensor) -> torch.Tensor:
        return model.head.mahalanobis(model.features(z)).gather(1, y[:, None]).squeeze(1)

    with torch.no_grad():
        f = model.features(x)
    offset = lgm_scores(tiny["lgm"].head, f.float().numpy(), bl) - term(x).detach().numpy()
    assert np.allclose(offset, offset[0], atol=1e-4)  # the filter's score = the attack's term + a constant
    z = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(term(z).sum(), z)
    direction = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = 1e-6  # small enough that no activation kink lies within the step
    with torch.no_grad():
        numeric = (term(x + h * direction) - term(x - h * direction)) / (2 * h)
    analytic = (g * direction).flatten(1).sum(1)
    assert torch.allclose(numeric, analytic, rtol=1e-4, atol=1e-6)


def test_defence_aware_attack_at_weight_zero_is_plain_collision(tiny, mnist_demo):
    bases, target, bl, tl = _pair(mnist_demo, n=2)
    plain = craft(tiny["lgm"], "fc", bases, target, bl, tl, iters=15, eps=0.1, seed=4)
    aware = craft(tiny["lgm"], "fc-adaptive", bases, target, bl, tl, iters=15, eps=0.1, seed=4, adaptive_weight=0.0)
    assert np.array_equal(plain.poisons, aware.poisons)


def _filter_scores(defence: str, model, mnist_demo, poisons: Poisons) -> np.ndarray:
    """The poisons' scores under ``defence`` fitted on a pool of clean training features plus them."""
    from core.defences import DEFENCES
    from core.models import extract_features

    clean = np.arange(len(mnist_demo.y_train))
    feats = np.concatenate([extract_features(model, mnist_demo.x_train[clean]).numpy(), poisons.traj_features[-1]])
    labels = np.concatenate([mnist_demo.y_train[clean], poisons.base_labels])
    scores = DEFENCES[defence].make(model.head).fit(feats, labels).scores_
    return scores[len(clean):]


@pytest.mark.parametrize("stealth", ["likelihood", "centroid", "neighbour"])
def test_each_stealth_term_lowers_its_own_filters_score(tiny, mnist_demo, stealth):
    """The adaptive attack on a filter (its stealth term, ``stealth_for``) leaves poisons its filter
    scores as more typical than plain collision's, at the same budget and seed."""
    from core.attacks import STEALTH, stealth_for

    bases, target, bl, tl = _pair(mnist_demo, n=3)
    model = tiny["lgm"]
    plain = craft(model, "fc-adaptive", bases, target, bl, tl, iters=60, eps=0.3, seed=1, adaptive_weight=0.0)
    aware = craft(model, "fc-adaptive", bases, target, bl, tl, iters=60, eps=0.3, seed=1, adaptive_weight=20.0,
                  stealth=stealth)
    assert aware.params["stealth"] == stealth
    for defence in STEALTH[stealth].filters[:1]:  # the filter the term mirrors most directly
        assert stealth_for(defence) == stealth
        assert _filter_scores(defence, model, mnist_demo, aware).mean() < \
            _filter_scores(defence, model, mnist_demo, plain).mean()


def test_feature_only_stealth_terms_run_on_a_softmax_model(tiny, mnist_demo):
    """The centroid and neighbour terms read features only: a softmax model can be attacked with
    them; the likelihood term needs the class Gaussians and says so."""
    from core.attacks import ATTACKS

    bases, target, bl, tl = _pair(mnist_demo, n=2)
    s = settings_for("fc-adaptive", "mnist", iters=5, stealth="centroid")
    assert ATTACKS["fc-adaptive"].applies_to("softmax", s)
    ATTACKS["fc-adaptive"].craft(tiny["softmax"], bases, target, bl, tl, s)
    with pytest.raises(ValueError, match="LGM"):
        ATTACKS["fc-adaptive"].craft(tiny["softmax"], bases, target, bl, tl,
                                     settings_for("fc-adaptive", "mnist", iters=5))
    with pytest.raises(ValueError, match="stealth must be one of"):
        settings_for("fc-adaptive", "mnist", stealth="hide")


def test_class_mean_shift_moves_the_base_class_mean_toward_the_target(tiny, mnist_demo):
    """``cm``'s objective is the distance from the (estimated) poisoned base-class mean to the
    target's feature: it falls, and a smaller class (each poison a larger share of it) gets closer."""
    bases, target, bl, tl = _pair(mnist_demo, n=4)
    model = tiny["lgm"]

    def mean_gap(p: Poisons, n: int) -> float:
        f0 = p.traj_features[0]
        shifted = f0.mean(0) + (p.traj_features[-1] - f0).sum(0) / n
        return float(np.linalg.norm(shifted - p.target_feature))

    big = craft(model, "cm", bases, target, bl, tl, iters=60, eps=0.3, class_size=40)
    small = craft(model, "cm", bases, target, bl, tl, iters=60, eps=0.3, class_size=4)
    assert big.traj_objective[-1][0] < big.traj_objective[0][0]
    assert mean_gap(small, 4) < mean_gap(big, 40)  # told its poisons are a larger share, the attack gets closer
    assert mean_gap(big, 40) < float(np.linalg.norm(big.traj_features[0].mean(0) - big.target_feature))
    assert np.abs(big.poisons - big.bases).max() <= 0.3 + 1e-6


def test_fitted_likelihood_term_is_the_bases_diagonal_gaussian():
    """Where the LGM filter fits Gaussians on the pool (a model pretrained on other classes), its
    adaptive attack estimates them from the bases: per class, mean and per-dimension variance."""
    from core.attacks import STEALTH, stealth_for

    g = torch.Generator().manual_seed(0)
    fb = torch.randn(6, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    f = torch.randn(6, 3, generator=g, dtype=torch.float64)
    got = STEALTH["fitted-likelihood"].term(None, f, labels, fb)
    for c in (0, 1):
        rows = labels == c
        mean, var = fb[rows].numpy().mean(0), fb[rows].numpy().var(0, ddof=1)  # the filter's own estimate
        want = 0.5 * ((f[rows].numpy() - mean) ** 2 / var).sum(1)
        assert np.allclose(got[rows].detach().numpy(), want, rtol=1e-5)
    assert stealth_for("lgm") == "likelihood" and stealth_for("lgm", new_classes=True) == "fitted-likelihood"
    assert stealth_for("spectral") == "centroid" and stealth_for("knn") == "neighbour"


def test_lab_gives_each_model_the_stealth_term_of_its_own_filter(tiny):
    """In the lab's softmax-vs-LGM run a defence-aware class-mean shift hides, on each model, from
    the filter that model brings (the likelihood on LGM, the class centre on softmax)."""
    from core.lab import LAB_CLEAN, lab_runs

    runs = lab_runs(tiny, "cm", "mnist", trial_seed=0, iters=5, n_poisons=3, adaptive_weight=1.0)
    assert runs["lgm"][2].stealth == "likelihood" and runs["softmax"][2].stealth == "centroid"
    assert runs["softmax"][2].class_size == LAB_CLEAN // 10 + 3  # the lab's poisons come on top of its clean set
    assert lab_runs(tiny, "fc-adaptive", "mnist", iters=5)["softmax"][1] == "fc"  # no Gaussians: plain collision


def test_noise_control_spends_the_whole_budget_at_random(tiny, mnist_demo):
    """The control moves every pixel the full budget (where [0, 1] allows), by seeded random signs."""
    bases, target, bl, tl = _pair(mnist_demo, n=3)
    a = craft(tiny["lgm"], "noise", bases, target, bl, tl, eps=0.1, seed=5)
    b = craft(tiny["lgm"], "noise", bases, target, bl, tl, eps=0.1, seed=5)
    c = craft(tiny["lgm"], "noise", bases, target, bl, tl, eps=0.1, seed=6)
    assert np.array_equal(a.poisons, b.poisons) and not np.array_equal(a.poisons, c.poisons)
    change = np.abs(a.poisons - a.bases)
    assert change.max() <= 0.1 + 1e-6
    free = (a.bases > 0.1 + 1e-6) & (a.bases < 0.9 - 1e-6)  # pixels the clamp to [0, 1] leaves alone
    assert np.allclose(change[free], np.floor(0.1 * 255 + 1e-6) / 255, atol=1e-6)


def test_class_mean_shift_through_crops_and_flips_keeps_more_of_its_shift_under_them(tiny, mnist_demo):
    """``eot``: crafted through random crop + flip draws, the poisons' summed feature shift survives
    the victim's augmentation better than plain poisons' does (measured on fresh draws, as
    bench/augment_shift.py does); the same seed gives the same poisons, and eot = 0 ignores it."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from augment_shift import shift_kept

    bases, target, bl, tl = _pair(mnist_demo, n=8)
    model = tiny["lgm"]
    kw = dict(iters=60, eps=0.3, lr=0.02, class_size=10)
    plain = craft(model, "cm", bases, target, bl, tl, **kw)
    eot = craft(model, "cm", bases, target, bl, tl, eot=4, seed=1, **kw)
    again = craft(model, "cm", bases, target, bl, tl, eot=4, seed=1, **kw)
    assert np.array_equal(eot.poisons, again.poisons) and eot.params["eot"] == 4
    assert np.array_equal(craft(model, "cm", bases, target, bl, tl, seed=5, **kw).poisons, plain.poisons)
    kept = {name: float(np.mean(shift_kept(model, p.poisons, bases, draws=16, seed=100)))
            for name, p in (("plain", plain), ("eot", eot))}
    assert kept["eot"] > kept["plain"] + 0.05, kept
