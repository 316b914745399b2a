"""Crafting speed: one poison, a batch against one-by-one, the default attack's early stop and each
speed step, and IBM ART's FeatureCollisionAttack.

    python bench/bench_craft.py --checkpoint checkpoints/mnist_softmax_d64.pt [--art] [--compile]

``one_poison``, ``batch`` and ``vs_art`` time Poison Frogs' solver (``fc-frogs``) against ART: same
model, same target and bases, same objective (ART's similarity_coeff, on [0, 1] pixels, is our
paper-scale beta0 x 255^2, and it applies the same dimension scaling), same iteration count. ART
(`pip install adversarial-robustness-toolbox`, the ``[bench]`` extra) is optional.

``fc_one_poison`` times the default attack (``fc`` with ``settings_for``' settings: budget, cosine
step, early stop ``patience``) for one MNIST poison at 1000 iterations on each ``--fc-checkpoints``
model over ``--pairs`` seeded target/base pairs, interleaved with the same call run to the end
(``patience=None``) and with batch norms folded into the convolutions (a step tried, not shipped):
wall and CPU time, the iterations actually run and the feature distance reached. ``steps``
measures each speed step per iteration, interleaved (A, B, C, A, B, C, ... medians over
``--repeats``): the weights' gradients on or off, batch norms folded, channels-last,
``torch.compile`` (``--compile``), the network alone (no attack loop), 1 against 2 threads; and
whether each step changes the poisons (same seed).
The load average is recorded beside every section: the machine this runs on is often shared.
Prints JSON (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from contextlib import contextmanager

import numpy as np
import torch

import core.attacks as attacks
from core.attacks import craft, paper_beta, poison_frogs, settings_for
from core.checkpoints import load_checkpoint
from core.data import load_demo

SHIPPED_FROZEN = attacks._frozen


def _pick(ds, n: int, seed: int):
    rng = np.random.default_rng(seed)
    ti = int(rng.choice(np.flatnonzero(ds.y_test == 3)))
    bases = ds.x_train[rng.choice(np.flatnonzero(ds.y_train == 8), n, replace=False)]
    return bases, ds.x_test[ti:ti + 1]


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


# --- the private model copy the attacks craft on, one variant per speed step -----------------------

def _copy_grad_weights(model):
    """Eval-mode copy whose weights still require gradients (the first build)."""
    return copy.deepcopy(model).eval()


def _copy_bn_folded(model):
    """The shipped frozen copy with every BatchNorm2d that follows a Conv2d in an nn.Sequential folded
    into that convolution (LeNet++: all six): the same function up to float rounding."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    frozen = SHIPPED_FROZEN(model)
    for seq in [m for m in frozen.modules() if isinstance(m, torch.nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                seq._modules[a] = fuse_conv_bn_eval(conv, bn).requires_grad_(False)
                seq._modules[b] = torch.nn.Identity()
    return frozen


def _copy_channels_last(model):
    frozen = _copy_bn_folded(model).to(memory_format=torch.channels_last)
    features = frozen.features
    frozen.features = lambda x: features(x.contiguous(memory_format=torch.channels_last))
    return frozen


def _compiled_copy_factory():
    """One compiled copy reused across calls (what a long-lived dashboard process would keep)."""
    cache: dict = {}

    def make(model):
        if id(model) not in cache:
            frozen = SHIPPED_FROZEN(model)
            frozen.extractor = torch.compile(frozen.extractor)
            cache[id(model)] = frozen
        return cache[id(model)]
    return make


@contextmanager
def _frozen_as(make):
    attacks._frozen = make
    try:
        yield
    finally:
        attacks._frozen = SHIPPED_FROZEN


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w, time.process_time() - c, out


# --- Poison Frogs against ART (the first build's benchmark) ----------------------------------------

def ours(model, bases, target, iters: int, beta0: float) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    p = poison_frogs(model, bases, target, np.full(len(bases), 8), 3, iters=iters, beta0=beta0,
                     min_step_frac=0.0, record_every=iters)
    return time.perf_counter() - t0, p.final_feature_distance


def art(model, bases, target, iters: int, beta0: float, lr: float) -> tuple[float, np.ndarray]:
    from art.attacks.poisoning import FeatureCollisionAttack
    from art.estimators.classification import PyTorchClassifier

    class Normalise(torch.nn.Module):
        def forward(self, x):
            return (x - model.mean) / model.std

    seq = torch.nn.Sequential(Normalise(), model.extractor, model.head).eval()
    clf = PyTorchClassifier(seq, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                            clip_values=(0.0, 1.0))
    x_t = (target.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    x_b = (bases.transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    attack = FeatureCollisionAttack(clf, x_t, feature_layer=1, max_iter=iters, similarity_coeff=beta0 * 255**2,
                                    learning_rate=lr, verbose=False)
    t0 = time.perf_counter()
    poisons, _ = attack.poison(x_b)
    dt = time.perf_counter() - t0
    with torch.no_grad():
        fp = model.features(torch.from_numpy(poisons))
        ft = model.features(torch.from_numpy(x_t))
    return dt, (fp - ft).norm(dim=1).numpy()


# --- the default attack ----------------------------------------------------------------------------

def fc(model, bases, target, iters: int, patience="default"):
    settings = settings_for("fc", "mnist", iters=iters)
    if patience != "default":
        settings = settings.replace(patience=patience)
    return craft(model, "fc", bases, target, np.full(len(bases), 8), 3, settings)


def fc_one_poison(ds, checkpoint: str, pairs: int, iters: int, seed: int) -> dict:
    """Early stop (the default) against running on, and against batch norms folded, per seeded
    pair, interleaved."""
    model, _ = load_checkpoint(checkpoint)
    fc(model, *_pick(ds, 1, seed), 5)  # warm-up
    rows, load0 = [], _load()
    for i in range(pairs):
        bases, target = _pick(ds, 1, seed + i)
        row = {"pair_seed": seed + i}
        for name, make, patience in (("early_stop", SHIPPED_FROZEN, "default"), ("run_on", SHIPPED_FROZEN, None),
                                     ("early_stop_bn_folded", _copy_bn_folded, "default")):
            with _frozen_as(make):
                wall, cpu, p = _timed(lambda: fc(model, bases, target, iters, patience))
            row[name] = {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
                         "iterations_run": int(p.params["iterations_run"]),
                         "feature_distance": float(p.final_feature_distance[0]),  # of the 8-bit poison
                         "best_loss": float(p.traj_objective[-2, 0]),  # squared distance before rounding
                         "_poison": p.poisons}
        row["bn_folded_pixels_differing"] = int(
            (row["early_stop"]["_poison"] != row["early_stop_bn_folded"]["_poison"]).sum())
        for name in ("early_stop", "run_on", "early_stop_bn_folded"):
            del row[name]["_poison"]
        rows.append(row)
    es = [r["early_stop"] for r in rows]
    ro = [r["run_on"] for r in rows]
    un = [r["early_stop_bn_folded"] for r in rows]
    gap = np.array([(e["feature_distance"] - r["feature_distance"]) / r["feature_distance"] for e, r in zip(es, ro)])
    loss_gap = np.array([(e["best_loss"] - r["best_loss"]) / r["best_loss"] for e, r in zip(es, ro)])
    med = lambda rs, k: float(np.median([r[k] for r in rs]))  # noqa: E731
    return {
        "checkpoint": checkpoint, "iters": iters, "pairs": pairs, "load_before": load0, "load_after": _load(),
        "threads": torch.get_num_threads(),
        "early_stop": {"median_seconds": med(es, "seconds"), "median_cpu_seconds": med(es, "cpu_seconds"),
                       "median_iterations_run": med(es, "iterations_run"),
                       "min_iterations_run": min(r["iterations_run"] for r in es),
                       "max_iterations_run": max(r["iterations_run"] for r in es),
                       "median_feature_distance": med(es, "feature_distance")},
        "run_on": {"median_seconds": med(ro, "seconds"), "median_cpu_seconds": med(ro, "cpu_seconds"),
                   "median_feature_distance": med(ro, "feature_distance")},
        "early_stop_bn_folded": {
            "median_seconds": med(un, "seconds"), "median_cpu_seconds": med(un, "cpu_seconds"),
            "same_iterations_run": sum(a["iterations_run"] == b["iterations_run"] for a, b in zip(es, un)),
            "max_rel_distance_change": float(max(abs(a["feature_distance"] - b["feature_distance"])
                                                 / b["feature_distance"] for a, b in zip(es, un))),
            "pixels_differing_total": sum(r["bn_folded_pixels_differing"] for r in rows),
            "pixels_total": len(rows) * int(np.prod(ds.x_train.shape[1:]))},
        "iterations_saved_median": iters - med(es, "iterations_run"),
        "distance_early_minus_run_on_rel": {"median": float(np.median(gap)), "max": float(gap.max()),
                                            "min": float(gap.min()),
                                            "pairs_same_or_better": int((gap <= 0).sum())},
        "best_loss_early_minus_run_on_rel": {"median": float(np.median(loss_gap)), "max": float(loss_gap.max())},
        "per_pair": rows,
    }


def steps(ds, checkpoint: str, iters: int, repeats: int, seed: int, compile_: bool) -> dict:
    """Per-iteration cost of each speed step, interleaved; fc runs all ``iters`` (no early stop)."""
    model, _ = load_checkpoint(checkpoint)
    bases, target = _pick(ds, 1, seed)
    bases5, _ = _pick(ds, 5, seed)
    fro = SHIPPED_FROZEN(model)
    x0 = attacks.to_input(bases).requires_grad_(False)
    with torch.no_grad():
        ft = fro.features(attacks.to_input(target))

    def bare():  # the network alone: one forward and one input gradient per iteration
        for _ in range(iters):
            x = x0.detach().requires_grad_(True)
            torch.autograd.grad((fro.features(x) - ft).pow(2).sum(), x)

    def frogs_grad_weights():  # the first build's one-poison run (5.63 s for 1000 iterations, idle)
        with _frozen_as(_copy_grad_weights):
            ours(model, bases, target, iters, 0.25 / 255**2)

    def fc_with(make, b=bases):
        def run():
            with _frozen_as(make):
                return fc(model, b, target, iters, None)
        return run

    variants = {"frogs_weights_require_grad": frogs_grad_weights,
                "fc_weights_require_grad": fc_with(_copy_grad_weights),
                "fc_frozen": fc_with(SHIPPED_FROZEN),
                "fc_frozen_bn_folded": fc_with(_copy_bn_folded),
                "fc_frozen_bn_folded_channels_last": fc_with(_copy_channels_last),
                "network_only": bare}
    out: dict = {"checkpoint": checkpoint, "iters": iters, "repeats": repeats, "threads": torch.get_num_threads()}
    # same poisons? (fc runs are deterministic for a seed; the variants differ only in float rounding)
    ref = fc_with(SHIPPED_FROZEN)()
    out["poisons_vs_shipped"] = {}
    for name in ("fc_weights_require_grad", "fc_frozen_bn_folded", "fc_frozen_bn_folded_channels_last"):
        p = variants[name]()
        out["poisons_vs_shipped"][name] = {
            "pixels_differing": int((p.poisons != ref.poisons).sum()),
            "rel_distance_change": float(abs(p.final_feature_distance[0] - ref.final_feature_distance[0])
                                         / ref.final_feature_distance[0])}
    if compile_:
        make = _compiled_copy_factory()
        load0 = _load()
        wall, cpu, p = _timed(fc_with(make))  # includes compiling
        variants["fc_compiled"] = fc_with(make)
        out["compile"] = {"first_call_seconds": round(wall, 2), "first_call_cpu_seconds": round(cpu, 2),
                          "load": [load0, _load()],
                          "pixels_differing": int((p.poisons != ref.poisons).sum())}
    for f in variants.values():  # warm-up
        f()
    times = {k: {"wall": [], "cpu": []} for k in variants}
    load0 = _load()
    for _ in range(repeats):
        for k, f in variants.items():
            wall, cpu, _ = _timed(f)
            times[k]["wall"].append(wall / iters * 1e3)
            times[k]["cpu"].append(cpu / iters * 1e3)
    out["per_iteration_ms"] = {k: {"wall_median": round(float(np.median(v["wall"])), 3),
                                   "cpu_median": round(float(np.median(v["cpu"])), 3),
                                   "wall": [round(x, 2) for x in v["wall"]]} for k, v in times.items()}
    out["load"] = [load0, _load()]
    # threads: 1 against 2 for one poison and for five (the shipped copy), interleaved
    th: dict = {}
    load0 = _load()
    cases = [(n, b) for n in (1, 5) for b in (1, 2)]
    for n, b in cases:  # warm-up
        with _threads(b):
            fc_with(SHIPPED_FROZEN, bases if n == 1 else bases5)()
    for _ in range(repeats):
        for n, b in cases:
            with _threads(b):
                wall, cpu, _ = _timed(fc_with(SHIPPED_FROZEN, bases if n == 1 else bases5))
            th.setdefault(f"{n}_poisons_{b}_threads", {"wall": [], "cpu": []})
            th[f"{n}_poisons_{b}_threads"]["wall"].append(wall / iters * 1e3)
            th[f"{n}_poisons_{b}_threads"]["cpu"].append(cpu / iters * 1e3)
    out["threads_per_iteration_ms"] = {k: {"wall_median": round(float(np.median(v["wall"])), 3),
                                           "cpu_median": round(float(np.median(v["cpu"])), 3),
                                           "wall": [round(x, 2) for x in v["wall"]]} for k, v in th.items()}
    out["threads_load"] = [load0, _load()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="checkpoints/mnist_softmax_d64.pt")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batch-iters", type=int, default=200)
    ap.add_argument("--beta0", type=float, default=0.25 / 255**2,
                    help="Poison Frogs' beta0 on the paper's 0-255 scale (default: the 0.25 on [0, 1] pixels "
                         "these timings were first measured with)")
    ap.add_argument("--art", action="store_true")
    ap.add_argument("--art-poisons", type=int, default=2)
    ap.add_argument("--art-iters", type=int, default=300)
    ap.add_argument("--fc-checkpoints", nargs="*",
                    default=["checkpoints/mnist_softmax_d64.pt", "checkpoints/mnist_lgm_d64.pt"])
    ap.add_argument("--pairs", type=int, default=8, help="seeded target/base pairs for the fc timings")
    ap.add_argument("--step-iters", type=int, default=100, help="iterations per timed run in the speed steps")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats per speed step")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--sections", nargs="*", default=["frogs", "fc", "steps"],
                    choices=["frogs", "fc", "steps"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(args.checkpoint)
    ds = load_demo(meta["config"]["dataset"])
    bases, target = _pick(ds, args.batch, args.seed)
    beta = paper_beta(args.beta0, model.config.feat_dim, int(np.prod(bases.shape[1:])))
    res: dict = {"checkpoint": args.checkpoint, "threads": torch.get_num_threads(), "cpu": platform.processor(),
                 "cores": os.cpu_count(), "torch": torch.__version__, "beta": beta, "load_start": _load()}
    if "frogs" in args.sections:
        ours(model, bases[:1], target, 5, args.beta0)  # warm-up
        load0 = _load()
        t, d = ours(model, bases[:1], target, args.iters, args.beta0)
        res["one_poison"] = {"iters": args.iters, "seconds": round(t, 3), "feature_distance": float(d[0]),
                             "load": [load0, _load()]}
        load0 = _load()
        t_batch, d_batch = ours(model, bases, target, args.batch_iters, args.beta0)
        t_single = sum(ours(model, bases[i:i + 1], target, args.batch_iters, args.beta0)[0]
                       for i in range(args.batch))
        res["batch"] = {"n": args.batch, "iters": args.batch_iters,
                        "batched_poisons_per_s": round(args.batch / t_batch, 3),
                        "one_by_one_poisons_per_s": round(args.batch / t_single, 3),
                        "speedup": round(t_single / t_batch, 2), "mean_feature_distance": float(d_batch.mean()),
                        "load": [load0, _load()]}
    if "fc" in args.sections:
        res["fc_one_poison"] = [fc_one_poison(ds, ck, args.pairs, args.iters, args.seed)
                                for ck in args.fc_checkpoints]
    if "steps" in args.sections:
        res["steps"] = steps(ds, args.checkpoint, args.step_iters, args.repeats, args.seed, args.compile)
        pi = res["steps"]["per_iteration_ms"]
        # the first build's one-poison run (5.63 s, idle machine, 2 threads) measured again here, per
        # iteration and in the same interleaved run, scales today's numbers to that idle machine
        scale = 5.631 / 1000 / (pi["frogs_weights_require_grad"]["wall_median"] / 1e3)
        res["idle_estimate"] = {
            "basis": "5.631 s for fc-frogs, 1000 iterations, weights requiring grad, idle, 2 threads "
                     "(bench/results/craft_speed_first_build.json) over this run's wall (scale) or CPU "
                     "(cpu_scale) time per iteration of the same, measured interleaved with fc",
            "scale": round(scale, 4),
            "fc_ms_per_iteration": round(pi["fc_frozen"]["wall_median"] * scale, 3),
            "cpu_scale": round(5.631 / 1000 / (pi["frogs_weights_require_grad"]["cpu_median"] / 1e3), 4),
            "fc_ms_per_iteration_cpu_basis": round(5.631 * pi["fc_frozen"]["cpu_median"]
                                                   / pi["frogs_weights_require_grad"]["cpu_median"], 3)}
        for entry in res.get("fc_one_poison", []):
            n = entry["early_stop"]["median_iterations_run"]
            entry["idle_estimate_seconds"] = {
                basis: {"early_stop": round(n * res["idle_estimate"][key] / 1e3, 2),
                        "run_on": round(args.iters * res["idle_estimate"][key] / 1e3, 2)}
                for basis, key in (("wall", "fc_ms_per_iteration"), ("cpu", "fc_ms_per_iteration_cpu_basis"))}
    if args.art:
        n = args.art_poisons
        load0 = _load()
        t_o, d_o = ours(model, bases[:n], target, args.art_iters, args.beta0)
        t_fc, _, p_fc = _timed(lambda: fc(model, bases[:n], target, args.art_iters))
        res["vs_art"] = {"n_poisons": n, "iters": args.art_iters,
                         "ours": {"poisons_per_s": round(n / t_o, 3), "mean_feature_distance": float(d_o.mean())},
                         "ours_fc_default": {"poisons_per_s": round(n / t_fc, 3),
                                             "iterations_run": int(p_fc.params["iterations_run"]),
                                             "mean_feature_distance": float(p_fc.final_feature_distance.mean()),
                                             "note": "the default attack: l_inf budget 0.1, early stop; a "
                                                     "different objective, so its distance is not comparable"},
                         "art": []}
        for lr in (0.01, 0.1, 1.0):  # ART's default (127500) assumes 0-255 images; we sweep and report all
            t_a, d_a = art(model, bases[:n], target, args.art_iters, args.beta0, lr)
            res["vs_art"]["art"].append({"learning_rate": lr, "poisons_per_s": round(n / t_a, 3),
                                         "mean_feature_distance": float(d_a.mean())})
        res["vs_art"]["load"] = [load0, _load()]
    res["load_end"] = _load()
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
