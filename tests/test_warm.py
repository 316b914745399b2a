"""The server's warm-up (pages/warm.py) fills what every page reads: after one pass, a second pass
loads no model, computes no features or targets and crafts nothing (all read from the caches)."""

import pytest

import pages.common as common
from pages.common import HEADS, shipped


@pytest.mark.slow
def test_warm_up_fills_every_shipped_pair_once(monkeypatch):
    from pages.warm import warm_all

    log = warm_all()
    for dataset, spaces in shipped().items():
        for space in spaces:
            for head in HEADS:
                for what in ("model", "test features", "train features", "map"):
                    assert any(line.startswith(f"{dataset} {space} {head} {what} ") for line in log), (dataset, space, what)
            assert any(line.startswith(f"{dataset} {space} targets ") for line in log)
    assert any(line.startswith("one-step lab press") and "failed" not in line for line in log)

    calls = []
    for name in ("load_checkpoint", "stored_features", "correct_targets", "default_judge", "load_demo"):
        real = getattr(common, name)
        monkeypatch.setattr(common, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    import core.lab
    import core.pipeline

    real_run, real_example = core.pipeline.run_trial, core.lab.example_poison
    monkeypatch.setattr(core.lab, "run_trial", lambda *a, **k: calls.append("run_trial") or real_run(*a, **k))
    monkeypatch.setattr(core.lab, "example_poison", lambda *a, **k: calls.append("example") or real_example(*a, **k))
    warm_all()
    assert calls == []
