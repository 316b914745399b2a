"""Model shapes, a tiny training run, resumption, divergence, and checkpoints."""

import json

import numpy as np
import pytest
import torch

from core.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from core.models import Classifier, default_config, to_images, to_input
from core.train import TrainConfig, TrainingDiverged, accuracy, augment_batch, fit


@pytest.mark.parametrize("dataset,shape", [("mnist", (1, 28, 28)), ("cifar10", (3, 32, 32))])
@pytest.mark.parametrize("head", ["softmax", "lgm"])
def test_shapes(dataset, shape, head):
    model = Classifier(default_config(dataset, head, 5))
    x = torch.rand(4, *shape)
    assert model.features(x).shape == (4, 5)
    assert model(x).shape == (4, 10)


def test_to_input_scales_uint8_and_keeps_floats():
    raw = torch.full((1, 2, 2, 1), 255, dtype=torch.uint8)
    out = to_input(raw)
    assert out.shape == (1, 1, 2, 2) and out.max() == 1.0 and raw.max() == 255
    poison = torch.full((1, 2, 2, 3), 0.5)
    assert torch.equal(to_input(poison), torch.full((1, 3, 2, 2), 0.5))
    assert (to_images(to_input(poison)) == poison.numpy()).all()


def test_augment_keeps_shape_and_is_seeded():
    x = torch.rand(6, 3, 32, 32)
    a = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1))
    b = augment_batch(x, "crop-flip", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


@pytest.mark.slow
def test_tiny_training_lowers_loss_and_learns(mnist_demo):
    torch.manual_seed(0)
    model = Classifier(default_config("mnist", "lgm", 2))
    x, y = mnist_demo.x_train[:512], mnist_demo.y_train[:512]
    hist = fit(model, x, y, TrainConfig(epochs=8, lr=0.05, seed=0), progress=False)
    assert hist["epoch_loss"][-1] < 0.5 * hist["epoch_loss"][0]
    assert accuracy(model, mnist_demo.x_test[:300], mnist_demo.y_test[:300]) > 0.25  # chance is 0.1


def test_resume_matches_uninterrupted(mnist_demo, tmp_path):
    x, y = mnist_demo.x_train[:128], mnist_demo.y_train[:128]
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, seed=3)
    torch.manual_seed(0)
    straight = Classifier(default_config("mnist", "softmax", 4))
    fit(straight, x, y, cfg, progress=False)

    state = tmp_path / "run.state"
    torch.manual_seed(0)
    part = Classifier(default_config("mnist", "softmax", 4))
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after_first_epoch(part, x, y, cfg, state)
    torch.manual_seed(123)  # a different init: resume must restore everything from the state file
    resumed = Classifier(default_config("mnist", "softmax", 4))
    fit(resumed, x, y, cfg, state_path=state, resume=True, progress=False)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def _interrupt_after_first_epoch(model, x, y, cfg, state):
    """Run ``fit`` and kill it when it starts epoch 2 (after epoch 1's state was written)."""
    import core.train as tr

    real = tr.tqdm

    def bar(iterable, desc, **kw):
        if desc.startswith("epoch 2/"):
            raise KeyboardInterrupt
        return real(iterable, desc=desc, **kw)

    tr.tqdm = bar
    try:
        fit(model, x, y, cfg, state_path=state, progress=False)
    finally:
        tr.tqdm = real


def test_absurd_learning_rate_stops_clearly(mnist_demo, tmp_path):
    torch.manual_seed(0)
    model = Classifier(default_config("mnist", "lgm", 2))
    with torch.no_grad():
        model.head.means.mul_(1e30)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        fit(model, mnist_demo.x_train[:64], mnist_demo.y_train[:64], TrainConfig(epochs=1, lr=10.0),
            state_path=tmp_path / "s.state", progress=False)
    assert not (tmp_path / "s.state").exists()


def test_checkpoint_roundtrip(tiny_lgm, tmp_path):
    path = save_checkpoint(tiny_lgm, tmp_path / "m.pt", {"test_accuracy": 0.5})
    model, meta = load_checkpoint(path)
    assert meta["config"]["head"] == "lgm" and len(meta["sha256"]) == 64
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), tiny_lgm.eval()(x))


def test_checkpoint_truncated_and_tampered(tiny_lgm, tmp_path):
    path = save_checkpoint(tiny_lgm, tmp_path / "m.pt", {})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="m.pt.*sha256"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="m.pt: not a loadable"):
        load_checkpoint(path, verify_hash=False)


def test_checkpoint_malicious_pickle_is_refused(tmp_path):
    """A pickle that would run code when unpickled: refused by weights_only, never executed."""
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"x": Evil()}))
    cfg = default_config("mnist", "softmax", 2).to_dict()
    from core.checkpoints import sha256_file

    (tmp_path / "evil.json").write_text(json.dumps({"config": cfg, "sha256": sha256_file(path)}))
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_missing_side_file(tiny_lgm, tmp_path):
    path = save_checkpoint(tiny_lgm, tmp_path / "m.pt", {})
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="side file missing"):
        load_checkpoint(path)


def test_training_is_deterministic(mnist_demo):
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        m = Classifier(default_config("mnist", "softmax", 3))
        fit(m, mnist_demo.x_train[:96], mnist_demo.y_train[:96], TrainConfig(epochs=1, batch_size=32, seed=5),
            progress=False)
        outs.append(np.concatenate([p.detach().numpy().ravel() for p in m.parameters()]))
    assert np.array_equal(*outs)


def test_frozen_copies_of_resnets_can_be_made_and_used_in_parallel_threads():
    """The lab crafts against both models at once; with torch.fx's batch-norm folding, a copy made in
    one thread while another ran a forward raised (about one round in five here)."""
    from concurrent.futures import ThreadPoolExecutor

    from core.models import Classifier, default_config, frozen_copy

    models = [Classifier(default_config("cifar10", h, 8, depth=1, width=4)) for h in ("softmax", "lgm")] * 4
    for m in models:
        with torch.no_grad():  # batch norms that are not the identity, so folding them is tested
            for bn in (b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)):
                bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
        m.eval()
    x = torch.rand(2, 3, 32, 32)

    def copy_and_run(m):
        c = frozen_copy(m)
        return c, c.features(x)

    for _ in range(8):
        with ThreadPoolExecutor(8) as pool:
            out = list(pool.map(copy_and_run, models))
    for m, (c, f) in zip(models, out):
        assert not any(isinstance(b, torch.nn.BatchNorm2d) for b in c.modules())
        assert torch.allclose(f, m.features(x), atol=1e-4)
