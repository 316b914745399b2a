"""Shared models never change, threads agree with a lone run, seeds reproduce bit for bit, no network."""

import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from core.attacks import craft
from core.cli import build_parser
from core.victim import Retraining, WarmHeadSettings, retrain_victim


def _run(model, ds, seed):
    bases = ds.x_train[np.flatnonzero(ds.y_train == 8)[:3]]
    target = ds.x_test[np.flatnonzero(ds.y_test == 3)[:1]]
    p = craft(model, "fc", bases, target, np.full(3, 8), 3, iters=15, eps=0.2, restarts=2, seed=seed)
    out, _ = retrain_victim(model, p, (ds.x_train[:150], ds.y_train[:150]), (ds.x_test[:60], ds.y_test[:60]),
                            Retraining(seed=seed, head_settings=WarmHeadSettings(steps=50)))
    return p.poisons, out.probs_after


def test_same_seed_bit_identical(tiny_lgm, mnist_demo):
    a, b = _run(tiny_lgm, mnist_demo, 1), _run(tiny_lgm, mnist_demo, 1)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]


def test_two_threads_match_lone_runs(tiny_lgm, mnist_demo):
    alone = _run(tiny_lgm, mnist_demo, 2)
    weights = {k: v.clone() for k, v in tiny_lgm.state_dict().items()}
    results = [None, None]

    def work(i):
        results[i] = _run(tiny_lgm, mnist_demo, 2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert np.allclose(r[0], alone[0], atol=1e-5) and np.allclose(r[1], alone[1], atol=1e-5)
    assert all(torch.equal(v, tiny_lgm.state_dict()[k]) for k, v in weights.items())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["train", "evaluate", "craft", "attack", "--dataset", "mnist", "cifar10",
                                 "--head", "lgm", "--epochs", "-1", "1e9", "nan", "--iters", "0", "--opacity",
                                 "1.5", "--eps", "inf", "--n-poisons", "100000", "--checkpoint", "x.pt",
                                 "--target-index", "-3", "--base-class", "12", "--out", "o.pt", "", "é"]),
                max_size=12))
def test_fuzz_cli_parser_only_exits_cleanly(argv):
    try:
        build_parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code in (0, 2)


@pytest.fixture
def no_network(monkeypatch):
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and not (host.startswith("127.") or host in ("localhost", "::1") or "/" in host):
            raise AssertionError(f"network call to {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def test_app_makes_no_network_call(no_network):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60).run()
    assert not at.exception


def test_usage_statistics_off():
    text = (Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text()
    assert "gatherUsageStats = false" in text
