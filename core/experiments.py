"""Experiment runner: model x attack x poisons x setting x defence, many seeded trials.

A trial picks (from ``seed`` and its index) a target that every model classifies correctly, a base
class, the bases and a clean retraining subset, so the same trial index means the same choice for
every model and attack: paired comparisons. Then it crafts, scores the pool (clean subset plus
poisons) with every defence, drops what each defence flags at the configured false-positive rate,
retrains a victim per defence, and records the outcome.

Trials are independent, so they run through joblib (local processes by default; ``backend`` can
name any joblib backend, e.g. ``ray`` or ``dask`` once registered). Each trial's record is cached as
JSON under ``OUT/trials/`` and a rerun skips what is there, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from .attacks import ATTACKS, attack_knobs, craft
from .checkpoints import CHECKPOINT_DIR, load_checkpoint
from .data import load_dataset, load_demo, pick_attack_data
from .defences import DEFENCES, roc, score, threshold_at_fpr
from .stats import wilson_interval
from .train import predict_logits
from .victim import SETTINGS, extract_features, retrain_victim


@dataclass(frozen=True)
class ExperimentConfig:
    models: dict = field(default_factory=dict)  # name -> checkpoint path
    attacks: tuple = ("fc",)
    n_poisons: tuple = (5,)
    settings: tuple = ("transfer",)
    defences: tuple = ("none",) + DEFENCES
    trials: int = 10
    iters: int = 300
    beta0: float = 0.25
    opacity: float = 0.3  # Poison Frogs' watermark for the feature-collision attacks
    eps: float | None = None  # l_inf budget (polytope attacks: attacks.default_eps)
    adaptive_weight: float = 1.0
    n_clean: int = 1000
    n_test: int = 1000
    fpr: float = 0.05
    end2end_epochs: int = 1
    seed: int = 0
    demo: bool = False
    data_dir: str | None = None
    n_jobs: int = 1
    backend: str = "loky"

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("config needs at least one model: {name: checkpoint}")
        bad = [a for a in self.attacks if a not in ATTACKS] + [s for s in self.settings if s not in SETTINGS]
        bad += [d for d in self.defences if d != "none" and d not in DEFENCES]
        if bad:
            raise ValueError(f"unknown attack/setting/defence: {bad}")
        if not 1 <= self.trials <= 100_000 or not 0 < self.fpr < 1:
            raise ValueError("trials must be >= 1 and fpr in (0, 1)")

    @classmethod
    def from_file(cls, path: str | Path) -> "ExperimentConfig":
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


@lru_cache(maxsize=8)
def _model(path: str):
    return load_checkpoint(path)


@lru_cache(maxsize=4)
def _dataset(name: str, demo: bool, data_dir: str | None):
    return load_demo(name) if demo else load_dataset(name, data_dir)


def _trial_key(model: str, attack: str, k: int, setting: str, trial: int) -> str:
    return f"{model}__{attack}__k{k}__{setting}__t{trial:04d}"


def candidate_targets(cfg: ExperimentConfig) -> np.ndarray:
    """Test indices (after the clean-accuracy slice) that every model classifies correctly."""
    ok = None
    for path in cfg.models.values():
        model, meta = _model(path)
        ds = _dataset(meta["config"]["dataset"], cfg.demo, cfg.data_dir)
        x, y = ds.x_test[cfg.n_test:], ds.y_test[cfg.n_test:]
        right = predict_logits(model, x).argmax(1).numpy() == y
        ok = right if ok is None else ok & right
    return np.flatnonzero(ok) + cfg.n_test


def run_trial(cfg: ExperimentConfig, targets: np.ndarray, model_name: str, attack: str, k: int, setting: str,
              trial: int, threads: int | None = None) -> dict:
    """One trial: craft, score with every defence, retrain a victim per defence, record."""
    if threads:
        torch.set_num_threads(threads)
    model, meta = _model(cfg.models[model_name])
    ds = _dataset(meta["config"]["dataset"], cfg.demo, cfg.data_dir)
    rng = np.random.default_rng([cfg.seed, trial])
    ti = int(rng.choice(targets))
    tl = int(ds.y_test[ti])
    bc = int(rng.choice([c for c in range(len(ds.classes)) if c != tl]))
    bases, clean = pick_attack_data(ds.y_train, tl, bc, k, cfg.n_clean, int(rng.integers(2**31)))
    if attack == "fc-adaptive" and model.config.head != "lgm":
        return {"skipped": "the defence-aware attack targets LGM models only"}
    knobs = attack_knobs(attack, ds.name, cfg.iters, beta0=cfg.beta0, opacity=cfg.opacity, eps=cfg.eps,
                         adaptive_weight=cfg.adaptive_weight, record_every=cfg.iters)
    poisons = craft(model, attack, ds.x_train[bases], ds.x_test[ti:ti + 1], np.full(k, bc), tl, **knobs)
    clean_feats = extract_features(model, ds.x_train[clean]).numpy()
    pool = np.concatenate([clean_feats, extract_features(model, poisons.poisons).numpy()])
    claimed = np.concatenate([ds.y_train[clean], poisons.base_labels])
    test = slice(0, cfg.n_test)
    test_feats = extract_features(model, ds.x_test[test])
    record = {"model": model_name, "attack": attack, "n_poisons": k, "setting": setting, "trial": trial,
              "seeds": {"trial_rng": [cfg.seed, trial], "victim": trial}, "target_index": ti, "target_label": tl,
              "base_class": bc, "craft_s": round(poisons.time_s, 3),
              "feature_distance": float(poisons.final_feature_distance.mean()),
              "l2": float(np.mean(poisons.perturbation()["l2"])),
              "linf": float(np.mean(poisons.perturbation()["linf"])), "defences": {}}
    n_clean = len(clean)
    for defence in cfg.defences:
        if defence == "lgm" and model.config.head != "lgm":
            continue
        if defence == "none":
            keep_clean, keep_poison, det = np.ones(n_clean, bool), np.ones(k, bool), {}
        else:
            s = score(defence, pool, claimed, head=model.head)
            thr = threshold_at_fpr(s[:n_clean], cfg.fpr)
            flags = s > thr
            keep_clean, keep_poison = ~flags[:n_clean], ~flags[n_clean:]
            r = roc(s[:n_clean], s[n_clean:])
            det = {"auc": r["auc"], "poisons_flagged": float(flags[n_clean:].mean()),
                   "clean_flagged": float(flags[:n_clean].mean()),
                   "poison_scores": s[n_clean:].tolist(), "clean_score_quantiles":
                   np.quantile(s[:n_clean], [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]).tolist()}
        outcome, _ = retrain_victim(model, poisons, ds.x_train[clean][keep_clean], ds.y_train[clean][keep_clean],
                                    ds.x_test[test], ds.y_test[test], setting, seed=trial,
                                    epochs=cfg.end2end_epochs, keep=keep_poison,
                                    clean_feats=clean_feats[keep_clean] if setting == "transfer" else None,
                                    test_feats=test_feats)
        record["defences"][defence] = {"success": outcome.success, "pred_after": outcome.pred_after,
                                       "clean_acc_after": outcome.clean_acc_after,
                                       "poisons_kept": int(keep_poison.sum()), **det}
    return record


def summarise(records: list[dict]) -> list[dict]:
    """Success rate with Wilson 95% CI and detection metrics per (model, attack, k, setting, defence)."""
    cells: dict = {}
    for r in records:
        if "skipped" in r:
            continue
        for defence, d in r["defences"].items():
            cells.setdefault((r["model"], r["attack"], r["n_poisons"], r["setting"], defence), []).append((r, d))
    rows = []
    for (model, attack, k, setting, defence), items in sorted(cells.items()):
        wins = sum(d["success"] for _, d in items)
        lo, hi = wilson_interval(wins, len(items))
        row = {"model": model, "attack": attack, "n_poisons": k, "setting": setting, "defence": defence,
               "trials": len(items), "successes": wins, "rate": wins / len(items), "ci95": [lo, hi],
               "clean_acc_after": float(np.mean([d["clean_acc_after"] for _, d in items])),
               "mean_l2": float(np.mean([r["l2"] for r, _ in items])),
               "mean_feature_distance": float(np.mean([r["feature_distance"] for r, _ in items]))}
        if defence != "none":
            row.update({m: float(np.mean([d[m] for _, d in items]))
                        for m in ("auc", "poisons_flagged", "clean_flagged")})
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    head = ("| model | attack | poisons | setting | defence | success (95% CI) | trials | clean acc | "
            "poisons flagged | clean flagged | AUC | poison l2 | feature distance |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        det = (f"{100 * r['poisons_flagged']:.0f}% | {100 * r['clean_flagged']:.1f}% | {r['auc']:.3f}"
               if "auc" in r else "- | - | -")
        lines.append(f"| {r['model']} | {r['attack']} | {r['n_poisons']} | {r['setting']} | {r['defence']} | "
                     f"{100 * r['rate']:.0f}% ({100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}) | {r['trials']} | "
                     f"{100 * r['clean_acc_after']:.1f}% | {det} | {r['mean_l2']:.2f} | "
                     f"{r['mean_feature_distance']:.2f} |")
    return head + "\n".join(lines) + "\n"


def run_experiment(cfg: ExperimentConfig, out: str | Path, progress: bool = True,
                   on_trial: Callable[[int, int], None] | None = None) -> dict:
    """Run (or resume) every trial of ``cfg``; writes results.json, results.md and trials/*.json.

    ``on_trial(done, total)`` is called after each trial (the dashboard's progress bar).
    """
    out = Path(out)
    _check_resume(cfg, out)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    t0 = time.perf_counter()
    targets = candidate_targets(cfg)
    if len(targets) == 0:
        raise ValueError("no test image is classified correctly by every model")
    jobs = [(m, a, k, s, t) for m in cfg.models for a in cfg.attacks for k in cfg.n_poisons
            for s in cfg.settings for t in range(cfg.trials)]
    pending = [j for j in jobs if not (out / "trials" / f"{_trial_key(*j)}.json").is_file()]
    threads = 1 if cfg.n_jobs != 1 else None
    runner = Parallel(n_jobs=cfg.n_jobs, backend=cfg.backend, return_as="generator_unordered")
    results = runner(delayed(_run_and_store)(cfg, targets, j, out, threads) for j in pending)
    for done, _ in enumerate(tqdm(results, total=len(pending), desc="trials", disable=not progress), start=1):
        if on_trial:
            on_trial(done, len(pending))
    records = [json.loads((out / "trials" / f"{_trial_key(*j)}.json").read_text()) for j in jobs]
    rows = summarise(records)
    summary = {"config": asdict(cfg), "n_trials": len(records), "cells": rows,
               "wall_s_this_run": round(time.perf_counter() - t0, 1), "torch": torch.__version__}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(rows))
    write_plot(rows, out / "success_rates.html")
    return summary


def load_results(root: str | Path | None = None) -> dict[str, dict]:
    """Every finished experiment under ``root`` (default: the shipped ``checkpoints/experiments``),
    by folder name: what ``run_experiment`` wrote to ``results.json``."""
    root = Path(root) if root is not None else CHECKPOINT_DIR / "experiments"
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/results.json"))}


# Settings that change how many trials run, or where, but not what any one trial computes.
_RESUMABLE = ("trials", "n_jobs", "backend")


def _check_resume(cfg: ExperimentConfig, out: Path) -> None:
    """Refuse to resume into a folder made by a different config: cached trials are keyed by
    model/attack/poisons/setting/index only, so they would silently stand in for the new settings."""
    old_file = out / "config.json"
    if not old_file.is_file():
        return
    old, new = json.loads(old_file.read_text()), json.loads(json.dumps(asdict(cfg)))  # tuples -> lists, as stored
    changed = sorted(k for k in set(old) | set(new) if k not in _RESUMABLE and old.get(k) != new.get(k))
    if changed:
        raise ValueError(f"{out} holds trials of a different config (changed: {', '.join(changed)}); "
                         "use a new --out folder, or delete that one to start over")


def rate_figure(rows: list[dict], title: str = ""):
    """Success rate with 95% intervals, one series per model / defence / setting (/ attack when
    several): lines against the number of poisons, or bars when every row has the same number (a
    dozen series stacked on one x position would hide each other). The dashboard shows it too."""
    import plotly.graph_objects as go

    attacks, settings = len({r["attack"] for r in rows}) > 1, len({r["setting"] for r in rows}) > 1
    series: dict = {}
    # each model's undefended victim first, then the same victim behind each filter
    for r in sorted(rows, key=lambda r: (r["model"], r["defence"] != "none", r["defence"])):
        name = r["model"] + (f" + {r['defence']}" if r["defence"] != "none" else ", no filter")
        name = (f"{r['attack']}: " if attacks else "") + name + (f", {r['setting']}" if settings else "")
        series.setdefault(name, []).append(r)
    fig = go.Figure()
    if len({r["n_poisons"] for r in rows}) == 1:
        names, rs = list(series), [v[0] for v in series.values()]
        fig.add_trace(go.Bar(x=names, y=[r["rate"] for r in rs], error_y=_error_bars(rs),
                             text=[f"{100 * r['rate']:.0f}%" for r in rs], textposition="auto",
                             marker_color=["#d62728" if r["defence"] == "none" else "#1f77b4" for r in rs]))
        fig.update_layout(xaxis_title=f"victim + filter ({rows[0]['n_poisons']} poisons per trial)")
    else:
        for name, rs in series.items():
            rs = sorted(rs, key=lambda r: r["n_poisons"])
            fig.add_trace(go.Scatter(x=[r["n_poisons"] for r in rs], y=[r["rate"] for r in rs], name=name,
                                     mode="lines+markers", error_y=_error_bars(rs)))
        fig.update_layout(xaxis_title="number of poisons")
    fig.update_layout(title=title, yaxis_title="attack success rate", yaxis_range=[0, 1.1], height=420)
    return fig


def _error_bars(rows: list[dict]) -> dict:
    return {"type": "data", "symmetric": False, "array": [r["ci95"][1] - r["rate"] for r in rows],
            "arrayminus": [r["rate"] - r["ci95"][0] for r in rows]}


def write_plot(rows: list[dict], path: Path) -> None:
    rate_figure(rows, "attack success rate (95% Wilson intervals)").write_html(path, include_plotlyjs=True)


def _run_and_store(cfg: ExperimentConfig, targets: np.ndarray, job: tuple, out: Path, threads: int | None) -> str:
    record = run_trial(cfg, targets, *job, threads=threads)
    path = out / "trials" / f"{_trial_key(*job)}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(path)  # atomic: a killed run never leaves a half-written trial behind
    return path.name
