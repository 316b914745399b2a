"""The experiment runner on a Dask cluster gives the same trials as a local run.

``run_experiment`` hands trials to joblib with ``backend=cfg.backend``; ``"dask"`` sends them to
the process's Dask client, here a two-worker ``LocalCluster`` in separate processes, so the config,
the jobs and the results cross process boundaries as on a remote cluster.
"""

import json

import pytest

from core.checkpoints import save_checkpoint
from core.experiments import ExperimentConfig, run_experiment

distributed = pytest.importorskip("distributed")

TIMING = {"craft_s"}  # the only per-trial field measured on the clock


@pytest.fixture(scope="module")
def tiny_config(tiny_lgm, tmp_path_factory):
    ckpt = str(save_checkpoint(tiny_lgm, tmp_path_factory.mktemp("ckpt") / "lgm.pt", {}))
    return ExperimentConfig(models={"lgm": ckpt}, attacks=("fc",), n_poisons=(2,), settings=("transfer",),
                            trials=2, iters=5, n_clean=120, n_test=100, demo=True, seed=3)


def _trials(out):
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in TIMING}
            for p in sorted((out / "trials").glob("*.json"))}


@pytest.mark.slow
def test_dask_backend_gives_the_local_results(tiny_config, tmp_path):
    local = run_experiment(tiny_config, tmp_path / "local", progress=False)
    # two single-threaded worker processes (joblib runs a one-core cluster in the calling process)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        on_dask = run_experiment(tiny_config.replace(backend="dask", n_jobs=2), tmp_path / "dask", progress=False)
        assert sum(client.ncores().values()) == 2
    assert _trials(tmp_path / "dask") == _trials(tmp_path / "local") and len(_trials(tmp_path / "local")) == 2
    assert on_dask["cells"] == local["cells"]
