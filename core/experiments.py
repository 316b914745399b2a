"""Experiment runner: model x attack x poisons x setting x defence, many seeded trials.

Trial ``t`` is planned from ``numpy.random.default_rng([seed, t])`` by ``core.pipeline.plan_trial``
(target among the test images every model of the experiment classifies correctly, base class,
judged bases, clean subset, stratified clean-accuracy set), the same for every model and attack:
paired comparisons. ``core.pipeline.run_trial`` then crafts, judges, filters and retrains.

Trials are independent, so they run through joblib (local processes by default; ``backend`` names
any joblib backend: ``dask`` runs them on a Dask cluster, see the README). Each trial's record is
cached as JSON under ``OUT/trials/`` (its poisons, as 8-bit images, beside it as ``.npz``) and a
rerun skips what is there, so an interrupted run resumes. At the end the trials are gathered into
the dashboard's gallery (``core.gallery``). Summaries, tables and figures are in
``core.report``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from joblib import Parallel, delayed, parallel_config
from tqdm.auto import tqdm

from .attacks import ATTACKS, settings_for
from .checkpoints import load_checkpoint
from .data import load_dataset, load_demo, stratified_sample
from .defences import DEFENCES
from .gallery import GALLERY_JSON, build_gallery, gallery_files
from .judge import JUDGES, load_judge
from .attacks import Poisons
from .models import extract_features
from .pipeline import FeatureBank, TooFewBases, correct_targets, evaluate_poisons, plan_trial, run_trial
from .report import load_trials, markdown_table, summarise
from .settings import default_of
from .victim import SETTINGS, VICTIM_HEADS, HeadData, Retraining, retrain_victim


# features of whole data sets, by model and data (FeatureBank.cached); POISONLAB_CACHE_DIR moves it
BANK_CACHE = Path(os.environ.get("POISONLAB_CACHE_DIR", Path.home() / ".cache" / "poisonlab"))
_OPTIONAL = {"eps": float, "data_dir": str}  # fields whose default is None, and the type they take
# Knobs the experiment sets for every attack itself (the trial index seeds each trial's attack).
_EXPERIMENT_KNOBS = ("eps", "record_every", "seed")  # iters: the experiment's, or one attack's own
# Configs written before attack_settings held one flat key per knob; read as the same experiment.
_LEGACY_KNOBS = ("restarts", "beta0", "opacity", "adaptive_weight")


def _canonical_attack_settings(attacks: tuple, raw: dict, where: str) -> dict:
    """{attack: {knob: value}} with every knob checked against the attack's settings, and values
    equal to the default dropped: two configs that run the same trials compare equal."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: attack_settings must be an object {{attack: {{setting: value}}}}")
    out = {}
    for attack, values in sorted(raw.items()):
        if attack not in ATTACKS:
            raise ValueError(f"{where}: attack_settings names unknown attack {attack!r}")
        if attack not in attacks:
            continue  # settings of an attack the grid does not run change nothing
        if not isinstance(values, dict):
            raise ValueError(f"{where}: attack_settings[{attack!r}] must be an object")
        shared = set(values) & set(_EXPERIMENT_KNOBS)
        if shared:
            raise ValueError(f"{where}: {', '.join(sorted(shared))} are set for the whole experiment, "
                             "not per attack")
        cls = ATTACKS[attack].settings
        cls.from_values({"eps": 0.1, **values}, f"{where}: attack_settings[{attack!r}]")  # validates
        knobs = cls.knobs()
        # iters is kept even at the attack's default: given per attack, it overrides the experiment's
        kept = {k: v for k, v in sorted(values.items()) if k == "iters" or v != default_of(knobs[k])}
        if kept:
            out[attack] = kept
    return out


def victim_spec(spec: object, where: str) -> tuple[str, object]:
    if not isinstance(spec, dict) or spec.get("head") not in VICTIM_HEADS:
        raise ValueError(f"{where} needs a head, one of {', '.join(VICTIM_HEADS)}")
    rest = {k: v for k, v in spec.items() if k != "head"}
    return spec["head"], VICTIM_HEADS[spec["head"]].settings.from_values(rest, where)


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment grid. ``eps=None`` means each data set's clean-label budget."""

    models: dict = field(default_factory=dict)  # name -> checkpoint path
    attacks: tuple = ("fc",)
    n_poisons: tuple = (5,)
    settings: tuple = ("transfer",)
    defences: tuple = ("none",) + tuple(DEFENCES)
    trials: int = 10
    iters: int = 300
    eps: float | None = None  # l_inf budget (None: attacks.default_eps of the data set)
    attack_settings: dict = field(default_factory=dict)  # {attack: {setting: value}}, beyond its defaults
    # the experiment's own victim: {"head": VICTIM_HEADS key, setting: value} (default: the warm-started head)
    victim: dict = field(default_factory=lambda: {"head": "warm"})
    # further transfer victims retrained on the same poisons: {name: {"head": VICTIM_HEADS key, setting: value}}
    victims: dict = field(default_factory=dict)
    bases_from_clean: bool = False  # the benchmark's protocol: the poisons take their bases' place
    # judge every poison (clean-label or not) and draw bases the judges agree on: true (the data
    # set's reference judge), false (no judge), or a name in core.judge.JUDGES
    judge: bool | str = True
    n_clean: int = 1000
    n_test: int = 1000
    fpr: float = 0.05
    end2end_epochs: int = 1
    seed: int = 0
    demo: bool = False
    data_dir: str | None = None
    n_jobs: int = 1
    backend: str = "loky"
    # the models whose clean victims must all classify a target correctly (default: ``models``): a
    # ladder's adaptive rung crafts against some models only, yet must draw the static rung's targets
    target_models: dict | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.models, dict) or not self.models:
            raise ValueError("config needs at least one model: {name: checkpoint}")
        bad = [a for a in self.attacks if a not in ATTACKS] + [s for s in self.settings if s not in SETTINGS]
        bad += [d for d in self.defences if d != "none" and d not in DEFENCES]
        if bad:
            raise ValueError(f"unknown attack/setting/defence: {bad}")
        if not 1 <= self.trials <= 100_000 or not 0 < self.fpr < 1 or not 1 <= self.iters <= 100_000:
            raise ValueError("trials and iters must be >= 1 and fpr in (0, 1)")
        if self.eps is not None and not 0 < self.eps <= 1:
            raise ValueError("eps must be in (0, 1] (pixels in [0, 1]) or null for the data set's budget")
        if any(not isinstance(k, int) or not 1 <= k <= 1000 for k in self.n_poisons):
            raise ValueError("n_poisons must be whole numbers in 1..1000")
        object.__setattr__(self, "attack_settings",
                           _canonical_attack_settings(tuple(self.attacks), self.attack_settings, "config"))
        self.primary_recipe(0)  # validates the experiment's victim
        self.control_recipes(0)  # validates every victim's head and settings
        if self.target_models is not None and (not isinstance(self.target_models, dict)
                                               or not set(self.models) <= set(self.target_models)):
            raise ValueError("target_models must name every model of the experiment (and may name more)")
        if not (isinstance(self.judge, bool) or (isinstance(self.judge, str) and self.judge in JUDGES)):
            raise ValueError(f"judge must be true, false or one of {sorted(JUDGES)}, got {self.judge!r}")
        if self.victim.get("head") != "warm" and "end2end" in self.settings:
            raise ValueError("end2end fine-tunes the model's own head: the victim's head must be 'warm' there")

    @property
    def primary_name(self) -> str:
        """The own victim's name in results: "warm" (the lab's victim), else its head's name, with
        "-aug" when it trains on crops and flips (a plain control of the same head may be "linear")."""
        if self.victim.get("head") == "warm":
            return "warm"
        return str(self.victim["head"]) + ("-aug" if self.victim.get("augment") else "")

    def primary_recipe(self, trial: int, setting: str = "transfer") -> Retraining:
        """The experiment's own victim of trial ``trial`` (filtered by every defence)."""
        head, head_settings = victim_spec(self.victim, "victim")
        if self.primary_name in self.victims:
            raise ValueError(f"victims: {self.primary_name!r} names the experiment's own victim; choose another name")
        return Retraining(setting=setting, head=head, head_settings=head_settings, seed=trial,
                          epochs=self.end2end_epochs)

    def control_recipes(self, trial: int, setting: str = "transfer") -> dict[str, Retraining]:
        """The extra victims of trial ``trial`` (transfer only: they are heads on frozen features)."""
        if not isinstance(self.victims, dict):
            raise ValueError("victims must be an object {name: {\"head\": ..., setting: value}}")
        out = {}
        for name, spec in self.victims.items():
            if name in ("warm", "primary"):
                raise ValueError(f"victims: {name!r} names the experiment's own victim; choose another name")
            head, head_settings = victim_spec(spec, f"victims[{name!r}]")
            if setting == "transfer":
                out[name] = Retraining(head=head, head_settings=head_settings, seed=trial)
        return out

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config") -> "ExperimentConfig":
        """Build from JSON-like values, with a clear error for an unknown key or a wrong type."""
        known = {f.name: f for f in fields(cls)}
        raw = dict(raw)
        legacy = {k: raw.pop(k) for k in _LEGACY_KNOBS if k in raw}
        if legacy:  # the flat knobs of older configs go to every attack of the grid that has them
            given = raw.get("attack_settings") or {}
            if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
                raise ValueError(f"{where}: attack_settings must be an object {{attack: {{setting: value}}}}")
            nested = {a: dict(v) for a, v in given.items()}
            for attack in raw.get("attacks", cls.attacks):
                if attack in ATTACKS:
                    mine = {k: v for k, v in legacy.items() if k in ATTACKS[attack].settings.knobs()}
                    if mine:
                        nested[attack] = {**nested.get(attack, {}), **mine}  # a flat key given now wins
            raw["attack_settings"] = nested
        unknown = set(raw) - set(known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        values = {}
        for key, value in raw.items():
            f = known[key]
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            want = _OPTIONAL.get(key) or type(default)
            value = tuple(value) if isinstance(value, list) else value
            if key in ("attack_settings", "victims", "victim", "target_models") or (
                    key == "judge" and isinstance(value, str)):
                values[key] = value
                continue
            if value is None and key in _OPTIONAL:
                values[key] = None
                continue
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
                raise ValueError(f"{where}: {key!r} must be {want.__name__}, got {value!r}")
            values[key] = value
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> "ExperimentConfig":
        try:
            raw = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a config is a JSON object")
        return cls.from_dict(raw, str(path))

    def replace(self, **changes) -> "ExperimentConfig":
        return self.from_dict({**asdict(self), **changes})


@lru_cache(maxsize=8)
def _model(path: str):
    return load_checkpoint(path)


@lru_cache(maxsize=4)
def _dataset(name: str, demo: bool, data_dir: str | None, classes: tuple[int, ...] | None = None):
    """The data set, restricted to ``classes`` (ids in the full set) for a new-classes model."""
    ds = load_demo(name) if demo else load_dataset(name, data_dir)
    return ds.restrict(classes) if classes is not None else ds


def victim_classes(path: str) -> tuple[int, ...] | None:
    """The victim's classes of a model pretrained on a class split (``train-suite --split-seed``),
    or None for a model trained on its whole data set."""
    split = _model(path)[1].get("class_split")
    return tuple(int(c) for c in split["victim_classes"]) if split else None


def _model_data(path: str, demo: bool, data_dir: str | None):
    """What a model's trials draw from: its data set, or the victim's classes of a split model."""
    return _dataset(_model(path)[1]["config"]["dataset"], demo, data_dir, victim_classes(path))


@lru_cache(maxsize=8)
def _bank(path: str, demo: bool, data_dir: str | None) -> FeatureBank:
    """A model's features of the whole data set, once per worker: every trial then looks its clean
    and test features up (computing them per trial cost more than the victims' retraining)."""
    model, meta = _model(path)
    data = _model_data(path, demo, data_dir)
    if demo:
        return FeatureBank.compute(model, data)
    return FeatureBank.cached(model, data, BANK_CACHE, meta["sha256"])


def _judge(name: str, demo: bool, data_dir: str | None, classes: tuple[int, ...] | None = None,
           judge: bool | str = True):
    """The judge ``judge`` (True: the reference one) for a data set, restricted to ``classes``."""
    return _load_judge(name, demo, data_dir, classes, "reference" if judge is True else str(judge))


@lru_cache(maxsize=4)
def _load_judge(name: str, demo: bool, data_dir: str | None, classes: tuple[int, ...] | None, judge: str):
    return load_judge(_dataset(name, demo, data_dir, classes), name=judge)


def _trial_key(model: str, attack: str, k: int, setting: str, trial: int) -> str:
    return f"{model}__{attack}__k{k}__{setting}__t{trial:04d}"


def candidate_targets(cfg: ExperimentConfig) -> dict[str, np.ndarray]:
    """Per data set: test indices that every model of the experiment on it classifies correctly.

    A model pretrained on other classes has no head for the victim's classes; there a target must be
    classified correctly by a clean victim: the experiment's own victim recipe (without
    augmentation) fitted on a seeded, stratified clean set of ``n_clean`` images (no poison) of the
    victim's classes."""
    by_dataset: dict[str, list] = {}
    for path in (cfg.target_models or cfg.models).values():
        model, meta = _model(path)
        by_dataset.setdefault(meta["config"]["dataset"], []).append(path)
    out = {}
    for name, paths in by_dataset.items():
        splits = {victim_classes(p) for p in paths}
        if len(splits) > 1:
            raise ValueError(f"{name}: the models of one experiment must share the victim's classes (paired trials); "
                             f"got {sorted(map(str, splits))}")
        classes = splits.pop()
        data = _dataset(name, cfg.demo, cfg.data_dir, classes)
        if classes is None:
            out[name] = correct_targets([_model(p)[0] for p in paths], data)
            continue
        recipe = cfg.primary_recipe(0)
        if getattr(recipe.head_settings, "augment", False):  # the reference victim reads features only
            recipe = replace(recipe, head_settings=replace(recipe.head_settings, augment=False))
        clean = stratified_sample(data.y_train, min(cfg.n_clean, len(data.y_train)),
                                  np.random.default_rng([cfg.seed, 10**6]))
        ok = np.ones(len(data.y_test), bool)
        for p in paths:
            model, bank = _model(p)[0], _bank(p, cfg.demo, cfg.data_dir)
            why = recipe.why_not(model.head, new_classes=True)
            if why:
                raise ValueError(f"{p}: {why}; set the experiment's victim, e.g. {{\"head\": \"linear\"}}")
            head = recipe.refit_head(model.head, HeadData(torch.from_numpy(bank.train[clean]),
                                                          torch.from_numpy(data.y_train[clean]),
                                                          n_classes=len(data.classes)))
            with torch.no_grad():
                ok &= head(torch.from_numpy(bank.test)).argmax(1).numpy() == data.y_test
        out[name] = np.flatnonzero(ok)
    return out


def _trial_setup(cfg: ExperimentConfig, targets: dict[str, np.ndarray], path: str, k: int, trial: int) -> tuple:
    """What trial ``trial`` of a model draws on, the same for a run and for its replay: (data set
    name, the data it draws from, the judge, the plan, whether the victim's classes are new)."""
    name, classes = _model(path)[1]["config"]["dataset"], victim_classes(path)
    ds = _dataset(name, cfg.demo, cfg.data_dir, classes)
    judge = _judge(name, cfg.demo, cfg.data_dir, classes, cfg.judge) if cfg.judge else None
    plan = plan_trial(ds, (cfg.seed, trial), targets[name], n_poisons=k, n_clean=cfg.n_clean, n_test=cfg.n_test,
                      judge=judge, bases_from_clean=cfg.bases_from_clean)
    return name, ds, judge, plan, classes is not None


def experiment_trial(cfg: ExperimentConfig, targets: dict[str, np.ndarray], model_name: str, attack: str, k: int,
                     setting: str, trial: int, threads: int | None = None) -> tuple[dict, np.ndarray | None]:
    """One trial of the grid through the shared pipeline: (record, poisons as uint8 or None)."""
    if threads:
        torch.set_num_threads(threads)
    path = cfg.models[model_name]
    model = _model(path)[0]
    entry = ATTACKS[attack]
    knobs = {"iters": cfg.iters, **cfg.attack_settings.get(attack, {})}
    name = _model(path)[1]["config"]["dataset"]
    asked = settings_for(attack, name, eps=cfg.eps, **knobs)  # the defaults filled in: what would run
    if not entry.applies_to(model.config.head, asked):
        return {"skipped": entry.why_not(model.config.head, asked)}, None
    if victim_classes(path) is not None and getattr(asked, "adaptive_weight", 0) and asked.stealth == "likelihood":
        return {"skipped": "the likelihood stealth term reads the model's own Gaussians, which describe the "
                           "classes it was trained on, not the victim's: use fitted-likelihood"}, None
    try:
        name, ds, judge, plan, new_classes = _trial_setup(cfg, targets, path, k, trial)
    except TooFewBases as exc:  # this trial's plan cannot be drawn (the same for every model): skipped, said
        return {"skipped": f"trial {trial}: {exc}"}, None
    if "class_size" in entry.settings.knobs():  # the victim's base class, poisons included: the clean
        # set holds n_c - k of them when the poisons take their bases' places, n_c when they come on top
        knobs.setdefault("class_size", int((ds.y_train[plan.clean_indices] == plan.base_class).sum()) + k)
    settings = settings_for(attack, name, trial_seed=trial, eps=cfg.eps, record_every=knobs["iters"], **knobs)
    result = run_trial(model, ds, plan, attack, settings, defences=cfg.defences, fpr=cfg.fpr,
                       victim=cfg.primary_recipe(trial, setting),
                       controls={n: r for n, r in cfg.control_recipes(trial, setting).items()
                                 if r.why_not(model.head, new_classes) is None},  # e.g. weight decay: softmax only
                       judge=judge, bank=_bank(path, cfg.demo, cfg.data_dir), new_classes=new_classes)
    record = {"model": model_name, "trial": trial, **result.record(), "victim_name": cfg.primary_name,
              "eps": settings.eps, "seeds": {"trial_rng": [cfg.seed, trial], "attack": trial, "victim": trial},
              "attack_settings": settings.to_dict()}
    if new_classes:
        record["victim_classes"] = list(ds.classes)
    return record, np.round(result.poisons.poisons * 255).astype(np.uint8)


def run_experiment(cfg: ExperimentConfig, out: str | Path, progress: bool = True,
                   on_trial: Callable[[int, int], None] | None = None, gallery: bool = True) -> dict:
    """Run (or resume) every trial of ``cfg``; writes results.json, results.md and trials/*.

    ``on_trial(done, total)`` is called after each trial (the dashboard's progress bar). ``gallery``:
    also gather the poisons for the dashboard's gallery (a ladder's rungs, which no page pages
    through, skip it: the static rung's would copy its experiment's, many MB).
    """
    out = Path(out)
    _refuse_labelled(out, "run an experiment into")
    _check_resume(cfg, out)
    (out / "trials").mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    t0 = time.perf_counter()
    targets = candidate_targets(cfg)
    if any(len(t) == 0 for t in targets.values()):
        raise ValueError("no test image is classified correctly by every model")
    # trial index outermost: a run stopped part-way leaves every cell with about as many trials
    jobs = [(m, a, k, s, t) for t in range(cfg.trials) for m in cfg.models for a in cfg.attacks
            for k in cfg.n_poisons for s in cfg.settings]
    pending = [j for j in jobs if not (out / "trials" / f"{_trial_key(*j)}.json").is_file()]
    threads = 1 if cfg.n_jobs != 1 else None
    # the backend is selected through parallel_config, not named in Parallel(): that is how joblib
    # registers its dask backend, and a named one hands Dask tasks a stray nesting_level keyword
    with parallel_config(backend=cfg.backend, n_jobs=cfg.n_jobs):
        results = Parallel(return_as="generator_unordered")(
            delayed(_run_and_store)(cfg, targets, j, out, threads) for j in pending)
        for done, _ in enumerate(tqdm(results, total=len(pending), desc="trials", disable=not progress), start=1):
            if on_trial:
                on_trial(done, len(pending))
    records = [json.loads((out / "trials" / f"{_trial_key(*j)}.json").read_text()) for j in jobs]
    rows = summarise(records)
    summary = {"config": asdict(cfg), "n_trials": len(records), "cells": rows,
               "wall_s_this_run": round(time.perf_counter() - t0, 1), "torch": torch.__version__}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(rows))
    datasets = {(_model(path)[1]["config"]["dataset"], victim_classes(path)) for path in cfg.models.values()}
    made = any(not r.get("skipped") for r in records)
    if gallery and len(datasets) == 1 and made:  # the dashboard's gallery pages through one data set's poisons
        name, classes = datasets.pop()
        build_gallery(out, data=_dataset(name, cfg.demo, cfg.data_dir, classes))
    return summary


def _refuse_labelled(folder: Path, what: str) -> None:
    """A labelled data set (``rejudge_experiment``) is made from another experiment's poisons: its
    bases are subsets and its judge did not draw them, so nothing may craft into it or replay it."""
    res = folder / "results.json"
    if res.is_file() and json.loads(res.read_text()).get("labelled"):
        src = json.loads(res.read_text())["labelled"].get("from")
        raise ValueError(f"{folder} is a labelled data set made from {src} by `poisonlab rejudge`: cannot {what} it; "
                         f"use {src} itself")


# Settings that change how many trials run, or where, but not what any one trial computes.
_RESUMABLE = ("trials", "n_jobs", "backend")


def _check_resume(cfg: ExperimentConfig, out: Path) -> None:
    """Refuse to resume into a folder made by a different config: cached trials are keyed by
    model/attack/poisons/setting/index only, so they would silently stand in for the new settings."""
    old_file = out / "config.json"
    if not old_file.is_file():
        return
    # both through from_dict: an older flat config and today's nested one compare as the same trials
    old = json.loads(json.dumps(asdict(ExperimentConfig.from_dict(json.loads(old_file.read_text()), str(old_file)))))
    new = json.loads(json.dumps(asdict(cfg)))  # tuples -> lists, as stored
    changed = sorted(k for k in set(old) | set(new) if k not in _RESUMABLE and old.get(k) != new.get(k))
    if changed:
        raise ValueError(f"{out} holds trials of a different config (changed: {', '.join(changed)}); "
                         "use a new --out folder, or delete that one to start over")


def _run_and_store(cfg: ExperimentConfig, targets: dict, job: tuple, out: Path, threads: int | None) -> str:
    record, poisons = experiment_trial(cfg, targets, *job, threads=threads)
    path = out / "trials" / f"{_trial_key(*job)}.json"
    if poisons is not None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, poisons=poisons)
        tmp.replace(path.with_suffix(".npz"))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(path)  # atomic, and written last: a trial counts as done only with its poisons beside it
    return path.name


def replay_experiment(exp_dir: str | Path, out: str | Path, victims: dict[str, dict], *,
                      defences: tuple[str, ...] | None = None, attacks: tuple[str, ...] | None = None,
                      trials: int | None = None, n_jobs: int = 1, progress: bool = True) -> dict:
    """Retrain other victims, behind other filters, on the poisons an experiment already crafted:
    transfer victims retrain heads only, so a head control or a filter rule needs no new crafting
    (end-to-end trials are left out: their victim is the fine-tuned network, not a head).

    ``victims``: {name: {"head": ..., knob: value}}; the first is the replay's own victim (every
    filter), the rest are its controls. Each trial's plan is drawn again from the experiment's seed
    and checked against the stored record (same target and bases, or an error), so the clean set
    is the one the poisons were crafted for. Writes ``OUT/config.json``, ``OUT/trials/*.json``
    (records as an experiment's, with ``replay_of``) and ``OUT/results.json`` / ``results.md``;
    resumable like an experiment."""
    exp_dir, out = Path(exp_dir), Path(out)
    _refuse_labelled(exp_dir, "replay")
    cfg = ExperimentConfig.from_file(exp_dir / "config.json")
    if not victims or not isinstance(victims, dict):
        raise ValueError("a replay needs at least one victim: {name: {\"head\": ...}}")
    recipes = {n: victim_spec(spec, f"victims[{n!r}]") for n, spec in victims.items()}
    defences = tuple(defences or cfg.defences)
    bad = [d for d in defences if d != "none" and d not in DEFENCES]
    if bad:
        raise ValueError(f"unknown defence: {bad}")
    meta = {"replay_of": str(exp_dir), "victims": victims, "defences": list(defences)}
    old = out / "config.json"
    if old.is_file() and json.loads(old.read_text()) != json.loads(json.dumps(meta)):
        raise ValueError(f"{out} holds a different replay; use a new --out folder")
    (out / "trials").mkdir(parents=True, exist_ok=True)
    old.write_text(json.dumps(meta, indent=2) + "\n")
    records = [r for r in load_trials(exp_dir) if (attacks is None or r["attack"] in attacks)
               and (trials is None or r["trial"] < trials) and r["setting"] == "transfer"]  # heads only
    jobs = [r for r in records if not (out / "trials" / f"{_trial_key(r['model'], r['attack'], r['n_poisons'], r['setting'], r['trial'])}.json").is_file()]
    targets = candidate_targets(cfg) if jobs else {}
    t0 = time.perf_counter()
    with parallel_config(backend="loky", n_jobs=n_jobs):
        results = Parallel(return_as="generator_unordered")(
            delayed(_replay_one)(cfg, targets, exp_dir, out, r, recipes, defences, 1 if n_jobs != 1 else None)
            for r in jobs)
        for _ in tqdm(results, total=len(jobs), desc="replays", disable=not progress):
            pass
    done = load_trials(out)
    rows = summarise(done)
    summary = {"config": meta, "n_trials": len(done), "cells": rows, "wall_s_this_run": round(time.perf_counter() - t0, 1),
               "torch": torch.__version__}
    (out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(rows))
    return summary


def _stored_poisons(model, ds, plan, rec: dict, npz: Path, keep: np.ndarray | None = None) -> Poisons:
    """A trial's stored 8-bit poisons as ``Poisons`` again (only those ``keep`` marks, if given)."""
    with np.load(npz, allow_pickle=False) as z:
        images = z["poisons"].astype(np.float32) / 255.0
    bases = plan.base_indices
    if keep is not None:
        images, bases = images[keep], bases[keep]
    target = ds.x_test[plan.target_index:plan.target_index + 1].astype(np.float32) / 255.0
    feats = extract_features(model, images).numpy()
    return Poisons(poisons=images, bases=ds.x_train[bases].astype(np.float32) / 255.0, target=target,
                   base_labels=np.full(len(images), plan.base_class), target_label=plan.target_label,
                   traj_iters=np.array([rec["iterations_run"]]), traj_features=feats[None],
                   traj_objective=np.zeros((1, len(images)), np.float32),
                   target_feature=extract_features(model, target).numpy()[0])


def _replay_one(cfg: ExperimentConfig, targets: dict, exp_dir: Path, out: Path, rec: dict, recipes: dict,
                defences: tuple[str, ...], threads: int | None) -> str:
    if threads:
        torch.set_num_threads(threads)
    key = _trial_key(rec["model"], rec["attack"], rec["n_poisons"], rec["setting"], rec["trial"])
    path, trial = cfg.models[rec["model"]], rec["trial"]
    model = _model(path)[0]
    _, ds, judge, plan, new_classes = _trial_setup(cfg, targets, path, rec["n_poisons"], trial)
    if plan.target_index != rec["target_index"] or plan.base_indices.tolist() != rec["base_indices"]:
        raise ValueError(f"{key}: the plan drawn again differs from the stored one (data or code changed)")
    poisons = _stored_poisons(model, ds, plan, rec, exp_dir / "trials" / f"{key}.npz")
    (first, (head, settings)), *rest = recipes.items()
    controls = {n: Retraining(head=h, head_settings=s, seed=trial) for n, (h, s) in rest}
    result = evaluate_poisons(model, ds, plan, rec["attack"], poisons, defences=defences, fpr=cfg.fpr,
                              victim=Retraining(head=head, head_settings=settings, seed=trial),
                              controls={n: r for n, r in controls.items() if r.why_not(model.head, new_classes) is None},
                              judge=judge, bank=_bank(path, cfg.demo, cfg.data_dir), new_classes=new_classes)
    record = {"model": rec["model"], "trial": trial, **result.record(), "victim_name": first, "eps": rec.get("eps"),
              "seeds": rec.get("seeds"), "replay_of": str(exp_dir), "craft_s": rec.get("craft_s")}
    tmp = out / "trials" / f"{key}.tmp"
    tmp.write_text(json.dumps(record) + "\n")
    tmp.replace(out / "trials" / f"{key}.json")
    return key


def rejudge_experiment(exp_dir: str | Path, judge: str, defences: tuple[str, ...] | None = None,
                       labelled_out: str | Path | None = None, progress: bool = True) -> dict:
    """An experiment's stored poisons judged again by ``judge`` (``core.judge.JUDGES``), and every
    victim retrained as a person checking the labels would leave the data: the poisons the judge
    rejects dropped (a labeller relabels an image that does not look like its label; the clean
    images are taken as correctly labelled), the rest behind each filter as before. No crafting.

    Writes ``EXP/rejudged/<judge>.json``: per trial the new verdict, its bases' verdict (the bases
    were drawn among images the experiment's own judge labels correctly, not this one), how many
    poisons were kept and the original outcome; and the cells over the retrained victims, so a
    cell's ``successes`` are *clean-label successes in a labelled data set* (its
    ``clean_label_rate``: the share of crafted poisons the judge accepts). ``labelled_out``: also
    write the labelled data sets as an experiment folder of their own (kept poisons only, records
    marked ``labelled``, results and a gallery), which the dashboard lists like any experiment. A
    trial whose every poison is rejected has its victims retrained on the clean set alone: it joins
    the no-filter cells only (with no poison in the pool a filter has nothing to find) and has no
    poisons to show in the gallery.
    Which judge stands in for a person better is settled by measurement
    (``bench/judge_calibration.py``)."""
    exp_dir = Path(exp_dir)
    _refuse_labelled(exp_dir, "rejudge")
    cfg = ExperimentConfig.from_file(exp_dir / "config.json")
    if judge not in JUDGES:
        raise ValueError(f"unknown judge {judge!r}; one of {sorted(JUDGES)}")
    if labelled_out is not None:
        lab = Path(labelled_out)
        if lab.resolve() == exp_dir.resolve() or ((lab / "results.json").is_file() and not json.loads(
                (lab / "results.json").read_text()).get("labelled")) or (lab / "trials").is_dir() and not (
                lab / "results.json").is_file() and any((lab / "trials").iterdir()):
            raise ValueError(f"{lab} holds an experiment of its own: the labelled data sets need a folder that is "
                             "empty or an earlier labelled one")
    defences = tuple(defences or cfg.defences)

    def key_of(r: dict) -> str:
        return _trial_key(r["model"], r["attack"], r["n_poisons"], r["setting"], r["trial"])

    stored = [r for r in load_trials(exp_dir) if r["setting"] == "transfer"
              and (exp_dir / "trials" / f"{key_of(r)}.npz").is_file()]
    targets = candidate_targets(cfg) if stored else {}
    labelled: list[tuple[str, dict, np.ndarray | None]] = []  # (key, record of the labelled set, kept poisons)
    trials = {}
    for rec in tqdm(stored, desc="rejudge", disable=not progress):
        key, path, trial = key_of(rec), cfg.models[rec["model"]], rec["trial"]
        model = _model(path)[0]
        name, ds, _, plan, new_classes = _trial_setup(cfg, targets, path, rec["n_poisons"], trial)
        if plan.target_index != rec["target_index"] or plan.base_indices.tolist() != rec["base_indices"]:
            raise ValueError(f"{key}: the plan drawn again differs from the stored one (data or code changed)")
        j = _judge(name, cfg.demo, cfg.data_dir, victim_classes(path), judge)
        with np.load(exp_dir / "trials" / f"{key}.npz", allow_pickle=False) as z:
            crafted = z["poisons"]
        v = j.verdict(crafted, plan.base_class, exclude=plan.base_indices)
        vb = j.verdict(ds.x_train[plan.base_indices], plan.base_class, exclude=plan.base_indices)
        kept = v.clean_label
        trials[key] = {**v.to_dict(), "bases_clean_label": vb.clean_label.tolist(), "kept": int(kept.sum()),
                       "original_success": rec["defences"]["none"]["success"]}
        mark = {"from": exp_dir.name, "judge": judge, "crafted": int(len(crafted)), "kept": int(kept.sum())}
        if not kept.any():  # nothing of the attack is left: the victims retrained on the clean set alone
            # (no filter runs: with no poison in the pool it has nothing to find)
            full = _stored_poisons(model, ds, plan, rec, exp_dir / "trials" / f"{key}.npz")
            bank = _bank(path, cfg.demo, cfg.data_dir)

            def clean_victim(recipe: Retraining) -> dict:
                o, _ = retrain_victim(model, full, (ds.x_train[plan.clean_indices], ds.y_train[plan.clean_indices]),
                                      (ds.x_test[plan.test_indices], ds.y_test[plan.test_indices]), recipe,
                                      keep=np.zeros(len(crafted), bool), clean_feats=bank.train[plan.clean_indices],
                                      test_feats=torch.from_numpy(bank.test[plan.test_indices]),
                                      n_classes=len(ds.classes) if new_classes else None)
                return {"none": {"success": o.success, "pred_after": o.pred_after,
                                 "clean_acc_after": o.clean_acc_after, "poisons_kept": 0}}

            controls = {n: r for n, r in cfg.control_recipes(trial).items() if r.why_not(model.head, new_classes) is None}
            labelled.append((key, {**rec, "defences": clean_victim(cfg.primary_recipe(trial)), "base_indices": [],
                                   "victims": {n: clean_victim(r) for n, r in controls.items()},
                                   "judge": None, "clean_label": True, "labelled": mark, "no_poison_kept": True}, None))
            continue
        result = evaluate_poisons(model, ds, plan, rec["attack"],
                                  _stored_poisons(model, ds, plan, rec, exp_dir / "trials" / f"{key}.npz", kept),
                                  defences=defences, fpr=cfg.fpr, victim=cfg.primary_recipe(trial),
                                  controls={n: r for n, r in cfg.control_recipes(trial).items()
                                            if r.why_not(model.head, new_classes) is None},
                                  judge=j, bank=_bank(path, cfg.demo, cfg.data_dir), new_classes=new_classes)
        # the trial keeps its crafted dose as its cell; its bases and verdict are the kept poisons'
        labelled.append((key, {"model": rec["model"], "trial": trial, **result.record(), "n_poisons": rec["n_poisons"],
                               "base_indices": plan.base_indices[kept].tolist(), "victim_name": cfg.primary_name,
                               "eps": rec.get("eps"), "seeds": rec.get("seeds"), "craft_s": rec.get("craft_s"),
                               "attack_settings": rec.get("attack_settings"), "labelled": mark,
                               **({"victim_classes": rec["victim_classes"]} if "victim_classes" in rec else {})},
                         crafted[kept]))
    # the summary's cells read every crafted poison's verdict (the acceptance rate), the victims' the labelled sets'
    rows = summarise([{**r, "judge": {"clean_label": trials[k]["clean_label"]}} for k, r, _ in labelled])
    bases_ok = [np.mean(t["bases_clean_label"]) for t in trials.values()]
    summary = {"judge": judge, "why": JUDGES[judge].why, "n_trials": len(trials),
               "poisons_kept": float(np.mean([t["kept"] / len(t["clean_label"]) for t in trials.values()])) if trials else None,
               "bases_clean_label_rate": float(np.mean(bases_ok)) if bases_ok else None,
               "cells": rows, "trials": trials}
    out = exp_dir / "rejudged" / f"{judge}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    if labelled_out is not None:
        _write_labelled(cfg.replace(judge=judge), Path(labelled_out), labelled, summary)
    return summary


def _write_labelled(cfg: ExperimentConfig, out: Path, labelled: list, summary: dict) -> None:
    """The labelled data sets of ``rejudge_experiment`` as an experiment folder (trials, results, gallery)."""
    (out / "trials").mkdir(parents=True, exist_ok=True)
    for old in [*(out / "trials").iterdir(), out / GALLERY_JSON, *gallery_files(out)]:
        old.unlink(missing_ok=True)  # a folder of its own, written whole each time
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    for key, rec, poisons in labelled:
        if poisons is not None:
            np.savez_compressed(out / "trials" / f"{key}.npz", poisons=poisons)
        (out / "trials" / f"{key}.json").write_text(json.dumps(rec) + "\n")
    rows = summarise([r for _, r, _ in labelled])
    (out / "results.json").write_text(json.dumps(
        {"config": asdict(cfg), "n_trials": len(labelled), "cells": rows,
         "labelled": {"from": labelled[0][1]["labelled"]["from"] if labelled else None, "judge": summary["judge"],
                      "poisons_kept": summary["poisons_kept"], "rule": "the poisons the judge rejects are dropped, "
                      "as a labeller would relabel them; every victim retrained on what is left"},
         "torch": torch.__version__}, indent=2) + "\n")
    (out / "results.md").write_text(markdown_table(rows))
    datasets = {(_model(p)[1]["config"]["dataset"], victim_classes(p)) for p in cfg.models.values()}
    if len(datasets) == 1 and any(p is not None for _, _, p in labelled):
        name, classes = datasets.pop()
        build_gallery(out, data=_dataset(name, cfg.demo, cfg.data_dir, classes))
