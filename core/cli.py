"""``poisonlab ...`` (or ``python -m core ...``): everything the dashboard does, headless.

Commands print one JSON object on stdout (progress goes to stderr) so results can be piped.
Bad arguments exit with status 2 and a one-line message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .attacks import ATTACKS, settings_for
from .checkpoints import (SUITES, CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint, sha256_file)
from .data import DATASETS, DataUnavailable, class_split, load_dataset, load_demo, stratified_sample, write_demo
from .defences import DEFENCES
from .embeddings import (MapError, features_path, fit_umap, map_key, map_path, read_features, save_features, save_map,
                         verify_map)
from .experiments import ExperimentConfig, rejudge_experiment, replay_experiment, run_experiment
from .export import BENCHMARK_FILES, write_benchmark
from .judge import JUDGE_SEED, JUDGES, default_judge, judge_path
from .ladder import LadderConfig, parse_rung, run_ladder
from .models import Classifier, default_config, extract_features, pick_device
from .pipeline import plan_trial, run_trial
from .settings import knob_type
from .train import TrainConfig, TrainingDiverged, accuracy, fit
from .victim import SETTINGS, Retraining


def _bounded(kind: type, lo: float, hi: float):
    """An argparse type that rejects values outside [lo, hi] with a clear message."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if not (lo <= value <= hi) or (isinstance(value, float) and not np.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{value} is outside [{lo}, {hi}]")
        return value
    return parse


def _data(args: argparse.Namespace, name: str):
    return load_demo(name) if getattr(args, "demo", False) else load_dataset(name, args.data_dir)


def _data_identity(data) -> dict:
    """The data set's name and, for a file source, its sha256: a side file must not record a path of
    the machine that trained it."""
    src = Path(data.source)
    ident = {"name": data.name, "source_kind": src.suffix.lstrip(".") or "folder"}
    if src.is_file():
        ident.update(file=src.name, sha256=sha256_file(src))
    return ident


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _train_one(data, out: Path, head: str, feat_dim: int, cfg: TrainConfig, device: torch.device, *,
               model_overrides: dict, subset: int | None = None, resume: bool = False,
               progress: bool = True, extra_meta: dict | None = None) -> dict:
    """Train one model with per-epoch state beside ``out`` (NAME.state) and write the checkpoint."""
    config = default_config(data.name, head, feat_dim, n_classes=len(data.classes), **model_overrides)
    x, y = data.x_train, data.y_train
    if subset:
        rng = np.random.default_rng(cfg.seed)
        keep = np.sort(rng.permutation(len(x))[:subset])
        x, y = x[keep], y[keep]
    torch.manual_seed(cfg.seed)
    model = Classifier(config).to(device)
    out = out.with_suffix(".pt")
    state_path = out.with_suffix(".state")
    history = fit(model, x, y, cfg, state_path=state_path, resume=resume, progress=progress,
                  eval_data=(data.x_test, data.y_test))
    test_acc = accuracy(model, data.x_test, data.y_test)
    meta = {"dataset": data.name, "head": head, "feat_dim": feat_dim, "seed": cfg.seed,
            "train": history["config"], "train_time_s": round(history["train_time_s"], 1),
            "n_train": int(len(x)), "data": _data_identity(data), "test_accuracy": test_acc,
            "n_test": int(len(data.y_test)), "epoch_test_accuracy": history["epoch_test_accuracy"],
            "torch": torch.__version__, "device": str(device), "hardware": _hardware(device),
            **(extra_meta or {})}
    save_checkpoint(model, out, meta)
    state_path.unlink(missing_ok=True)
    return {"checkpoint": str(out), "test_accuracy": test_acc, "train_time_s": meta["train_time_s"]}


def cmd_train(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    data = _data(args, args.dataset)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      augment=args.augment or ("crop-flip" if args.dataset == "cifar10" else "none"),
                      weight_decay=args.weight_decay, margin_warmup_epochs=args.margin_warmup)
    overrides = dict(depth=args.depth, width=args.width, alpha=args.alpha, lam=args.lam,
                     covariance=args.covariance)
    return _train_one(data, Path(args.out), args.head, args.feat_dim, cfg, pick_device(args.device),
                      model_overrides=overrides, subset=args.subset, resume=args.resume,
                      progress=not args.quiet)


def cmd_train_judge(args: argparse.Namespace) -> dict:
    """Train the clean-label judge's reference classifier (``core.judge``) for one data set."""
    if args.threads:
        torch.set_num_threads(args.threads)
    data = _data(args, args.dataset)
    cifar = args.dataset == "cifar10"
    cfg = TrainConfig(epochs=args.epochs or (15 if cifar else 3), lr=0.05, seed=JUDGE_SEED + (args.arch != "convnet"),
                      augment="crop-flip" if cifar else "shift")
    overrides = {"arch": args.arch, "in_channels": 3 if cifar else 1, **({"width": args.width} if args.arch == "vgg" else {})}
    out = judge_path(args.dataset, args.out)
    if args.arch != "convnet":  # a second judge network beside the shipped one, never over it
        out = out.with_name(f"{out.stem}_{args.arch}{args.width}.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    return _train_one(data, out, "softmax", 128, cfg, pick_device(args.device), model_overrides=overrides,
                      resume=True, progress=not args.quiet)


def cmd_train_suite(args: argparse.Namespace) -> dict:
    """Train every model of a dataset's suite into ``--out``, one after another, each resumable per
    epoch: rerun the same command after an interruption and it continues where it stopped.

    ``--split-seed S`` trains the high-d pair on the seeded half of the classes that
    ``data.class_split`` sets aside for pretraining (the new-classes transfer setting): the
    victims' classes are never seen by these extractors."""
    if args.threads:
        torch.set_num_threads(args.threads)
    data = _data(args, args.dataset)
    suite, stem, extra = SUITES[args.dataset], args.dataset.replace('-', '_'), {}
    if args.split_seed is not None:
        pretrain, victim = class_split(args.dataset, args.split_seed)
        data = data.restrict(pretrain)
        suite = [(h, d) for h, d in suite if d > 2]
        stem = f"{stem}_split{args.split_seed}"
        extra = {"class_split": {"seed": args.split_seed, "pretrain_classes": list(pretrain),
                                 "victim_classes": list(victim), "pretrain_names": list(data.classes)}}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      augment="crop-flip" if args.dataset == "cifar10" else "shift",
                      weight_decay=args.weight_decay, margin_warmup_epochs=args.margin_warmup)
    device = pick_device(args.device)
    done = []
    for head, feat_dim in suite:
        if args.only and f"{head}_d{feat_dim}" not in args.only:
            continue
        out = out_dir / f"{stem}_{head}_d{feat_dim}.pt"
        if out.is_file() and out.with_suffix(".json").is_file() and not out.with_suffix(".state").is_file():
            done.append({"checkpoint": str(out), "skipped": "already trained"})
            continue
        print(f"training {out.name}", file=sys.stderr, flush=True)
        done.append(_train_one(data, out, head, feat_dim, cfg, device, model_overrides={}, resume=True,
                               progress=not args.quiet, extra_meta=extra))
    return {"out": str(out_dir), "models": done}


def cmd_evaluate(args: argparse.Namespace) -> dict:
    model, meta = load_checkpoint(args.checkpoint, pick_device(args.device))
    cfg = meta["config"]
    data = _data(args, cfg["dataset"])
    x, y = data.x_test, data.y_test
    if args.limit:  # a stratified, seeded sample: the data packs are sorted by class
        keep = stratified_sample(y, min(args.limit, len(y)), np.random.default_rng(0))
        x, y = x[keep], y[keep]
    t0 = time.perf_counter()
    acc = accuracy(model, x, y)
    return {"accuracy": acc, "n_test": int(len(y)), "dataset": cfg["dataset"], "head": cfg["head"],
            "feat_dim": cfg["feat_dim"], "arch": cfg["arch"], "recorded_accuracy": meta.get("test_accuracy"),
            "data_source": data.source, "eval_time_s": round(time.perf_counter() - t0, 2)}


def cmd_make_demo(args: argparse.Namespace) -> dict:
    data = load_dataset(args.dataset, args.data_dir, download=False)
    path = write_demo(data, args.train_per_class, args.test_per_class, args.seed)
    return {"demo": str(path), "bytes": path.stat().st_size}


def _judge_or_none(data):
    """The data set's default clean-label judge (the dashboard's) when one is shipped (``train-judge``
    makes one)."""
    return default_judge(data) if judge_path(data.name).is_file() else None


def _trial_from_args(args: argparse.Namespace, defences: tuple[str, ...]):
    """Plan the trial the arguments name and run it through the shared pipeline."""
    model, meta = load_checkpoint(args.checkpoint, pick_device(args.device))
    data = _data(args, meta["config"]["dataset"])
    if not 0 <= args.target_index < len(data.y_test):
        raise ValueError(f"--target-index must be in 0..{len(data.y_test) - 1} ({data.source})")
    judge = None if args.no_judge else _judge_or_none(data)
    plan = plan_trial(data, args.seed, np.array([args.target_index]), n_poisons=args.n_poisons,
                      n_clean=getattr(args, "n_clean", 1000), n_test=getattr(args, "n_test", 1000),
                      target_index=args.target_index, base_class=args.base_class, judge=judge)
    given = {name: getattr(args, name) for name in _attack_knobs() if getattr(args, name) is not None}
    stray = sorted(set(given) - set(ATTACKS[args.attack].settings.knobs()))
    if stray:
        raise ValueError(f"{ATTACKS[args.attack].label} has no setting "
                         f"{', '.join('--' + k.replace('_', '-') for k in stray)}")
    settings = settings_for(args.attack, data.name, trial_seed=args.seed, **given)
    victim = Retraining(setting=getattr(args, "setting", "transfer"), seed=args.seed, epochs=getattr(args, "epochs", 1))
    result = run_trial(model, data, plan, args.attack, settings, defences=defences, victim=victim, judge=judge)
    result.poisons.params.update(checkpoint=str(args.checkpoint), target_index=args.target_index, seed=args.seed,
                                 base_indices=plan.base_indices.tolist(), data=data.name)
    return result


def cmd_craft(args: argparse.Namespace) -> dict:
    result = _trial_from_args(args, defences=())
    if args.out:
        result.poisons.save(args.out)
    return {**result.poisons.summary(), "judge": result.verdict.to_dict() if result.verdict else None,
            "out": args.out}


def cmd_attack(args: argparse.Namespace) -> dict:
    result = _trial_from_args(args, defences=tuple(args.defences))
    return {"attack": result.poisons.summary(), "trial": result.record(),
            "outcomes": {name: v.outcome.to_dict() for name, v in result.victims.items()}}


def cmd_experiment(args: argparse.Namespace) -> dict:
    cfg = ExperimentConfig.from_file(args.config)
    overrides = {k: v for k, v in {"n_jobs": args.n_jobs, "backend": args.backend, "trials": args.trials}.items()
                 if v is not None}
    if overrides:
        cfg = cfg.replace(**overrides)
    summary = run_experiment(cfg, args.out, progress=not args.quiet)
    return {"out": args.out, "n_trials": summary["n_trials"], "cells": len(summary["cells"]),
            "wall_s_this_run": summary["wall_s_this_run"]}


def cmd_ladder(args: argparse.Namespace) -> dict:
    """The adaptive ladder (``core.ladder``): every filter against the attack on its own statistic."""
    cfg = LadderConfig.from_file(args.config)
    overrides = {k: v for k, v in {"n_jobs": args.n_jobs, "trials": args.trials}.items() if v is not None}
    if overrides:
        cfg = LadderConfig(cfg.experiment.replace(**overrides), cfg.weights, cfg.stealth_weights)
    only = {parse_rung(r) for r in args.only} if args.only else None
    rows = run_ladder(cfg, args.out, progress=not args.quiet, only=only)
    return {"out": args.out, "rungs": len(cfg.rungs()), "rows": len(rows)}


def cmd_replay(args: argparse.Namespace) -> dict:
    """Other victims and filters on an experiment's stored poisons (``core.experiments.replay_experiment``)."""
    try:
        victims = json.loads(args.victims)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--victims must be a JSON object {{name: {{\"head\": ...}}}} ({exc})") from None
    summary = replay_experiment(args.experiment, args.out, victims, defences=tuple(args.defences) if args.defences else None,
                                attacks=tuple(args.attacks) if args.attacks else None, trials=args.trials,
                                n_jobs=args.n_jobs, progress=not args.quiet)
    return {"out": args.out, "n_trials": summary["n_trials"], "cells": len(summary["cells"]),
            "wall_s_this_run": summary["wall_s_this_run"]}


def cmd_rejudge(args: argparse.Namespace) -> dict:
    """An experiment's stored poisons judged again by another judge (``core.experiments.rejudge_experiment``)."""
    summary = rejudge_experiment(args.experiment, args.judge, labelled_out=args.labelled_out, progress=not args.quiet)
    return {"out": str(Path(args.experiment, "rejudged", f"{args.judge}.json")), "n_trials": summary["n_trials"],
            "poisons_kept": summary["poisons_kept"], "bases_clean_label_rate": summary["bases_clean_label_rate"],
            "successes_with_rejected_poisons_dropped": {
                f"{c['model']}/{c['victim']}/{c['attack']}/k{c['n_poisons']}": f"{c['successes']} of {c['trials']}"
                for c in summary["cells"] if c["defence"] == "none"}}


def cmd_export_benchmark(args: argparse.Namespace) -> dict:
    """One shipped trial's poisons in the poisoning benchmark's format (``core.export.write_benchmark``)."""
    folder = Path(args.experiment)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.trial) or ".." in args.trial:
        raise ValueError(f"--trial must be a trial's file name in {folder / 'trials'}, got {args.trial!r}")
    record_path = folder / "trials" / f"{args.trial}.json"
    if not record_path.is_file() or not record_path.with_suffix(".npz").is_file():
        raise ValueError(f"{record_path}: no such trial with poisons (see {folder / 'trials'})")
    record = json.loads(record_path.read_text())
    with np.load(record_path.with_suffix(".npz"), allow_pickle=False) as z:
        poisons = z["poisons"]
    cfg = ExperimentConfig.from_file(folder / "config.json")
    model_meta = load_checkpoint(cfg.models[record["model"]])[1]
    data = load_demo(model_meta["config"]["dataset"]) if cfg.demo else load_dataset(model_meta["config"]["dataset"],
                                                                                     args.data_dir or cfg.data_dir)
    target = data.x_test[record["target_index"]:record["target_index"] + 1]
    provenance = {"experiment": folder.name, "trial": args.trial, "data": _data_identity(data),
                  "indices": "into this data source's train / test split; torchvision's CIFAR-10 order only "
                             "when the source is torchvision's files (the shared JPEG pack is sorted by class)"}
    out = write_benchmark(args.out, poisons, record["base_class"], np.asarray(record["base_indices"]), target,
                          record["target_label"], provenance)
    return {"out": str(out), "poisons": int(len(poisons)), "files": list(BENCHMARK_FILES)}


def cmd_precompute_maps(args: argparse.Namespace) -> dict:
    """Fit and ship the UMAP maps of every high-d checkpoint and the demo sample's features under
    every checkpoint, so no dashboard user waits for UMAP or for feature extraction.

    Each map is written with its sha256 side file. A shipped map that passes its check is kept
    unless ``--force``; one that fails it (no side file, changed bytes) is refitted and reported."""
    written, refused = [], []
    for path in list_checkpoints():
        model, meta = load_checkpoint(path)
        key, demo = map_key(path), load_demo(meta["config"]["dataset"])
        feats = {}
        for split, images in (("test", demo.x_test), ("train", demo.x_train)):  # drawn; the lab's pool
            target = features_path(key, split, shipped=True)
            feats[split] = None if args.force else read_features(target, (len(images), meta["config"]["feat_dim"]))
            if feats[split] is None:
                feats[split] = extract_features(model, images).numpy()
                written.append(str(save_features(feats[split], target)))
        if meta["config"]["feat_dim"] == 2:
            continue
        target = map_path(key, 0, shipped=True)
        if target.is_file() and not args.force:
            try:
                verify_map(target)
                continue
            except MapError as exc:
                refused.append(str(exc))
        written.append(str(save_map(fit_umap(feats["test"], 0), target)))
    return {"written": written, "refused": refused}


_ALIASES = {"beta0": ("--beta",)}  # older spellings of a flag
_CLI_DEFAULTS = {"iters": 1000}  # the CLI's own default (the attacks' own: 300 for collision)


def _attack_knobs() -> dict:
    """{knob: (field, settings class, attacks that use it)} over every attack of the registry, the
    trial-level seed excepted: the CLI's attack flags."""
    out: dict = {}
    for attack in ATTACKS.values():
        for name, f in attack.settings.knobs().items():
            if name == "seed":
                continue
            first, owner, helps, lo, hi = out.get(name, (f, attack.settings, {}, f.metadata["lo"], f.metadata["hi"]))
            helps.setdefault(f.metadata["help"], []).append(attack.name)
            if lo is not None:  # the widest range: each attack checks its own
                lo, hi = min(lo, f.metadata["lo"]), max(hi, f.metadata["hi"])
            out[name] = (first, owner, helps, lo, hi)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="poisonlab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def data_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", help="folder with NAME.npz or torchvision's files "
                        "(default: $POISONLAB_DATA_DIR, then a torchvision download)")
        sp.add_argument("--demo", action="store_true", help="use the embedded demo sample (no dataset needed)")
        sp.add_argument("--device", help="cpu or cuda (default: cuda when present)")

    t = sub.add_parser("train", help="train a softmax or LGM model and write a checkpoint")
    t.add_argument("--dataset", choices=DATASETS, required=True)
    t.add_argument("--head", choices=("softmax", "lgm"), required=True)
    t.add_argument("--feat-dim", type=_bounded(int, 2, 1024), default=2)
    t.add_argument("--epochs", type=_bounded(int, 1, 1000), default=10)
    t.add_argument("--batch-size", type=_bounded(int, 1, 4096), default=128)
    t.add_argument("--lr", type=_bounded(float, 1e-6, 10.0), default=0.05)
    t.add_argument("--weight-decay", type=_bounded(float, 0.0, 1.0), default=5e-4)
    t.add_argument("--alpha", type=_bounded(float, 0.0, 10.0), help="LGM margin (default 1.0; CIFAR 0.3)")
    t.add_argument("--lam", type=_bounded(float, 0.0, 10.0), help="LGM likelihood weight (default 0.1)")
    t.add_argument("--covariance", choices=("identity", "diag"), default="identity")
    t.add_argument("--margin-warmup", type=_bounded(float, 0.0, 100.0), default=1.0,
                   help="epochs over which the LGM margin ramps up")
    t.add_argument("--depth", type=_bounded(int, 1, 20), help="ResNet blocks per stage (CIFAR)")
    # widths below 16 hit a oneDNN memory-corruption bug in torch 2.14.1 when batch sizes change
    t.add_argument("--width", type=_bounded(int, 16, 256), help="ResNet first-stage width (CIFAR)")
    t.add_argument("--augment", choices=("none", "shift", "crop-flip"))
    t.add_argument("--subset", type=_bounded(int, 1, 10_000_000), help="train on this many random examples")
    t.add_argument("--seed", type=_bounded(int, 0, 2**31 - 1), default=0)
    t.add_argument("--out", required=True, help="checkpoint path (NAME.pt; NAME.json is written beside it)")
    t.add_argument("--resume", action="store_true", help="continue from NAME.state if present")
    t.add_argument("--quiet", action="store_true")
    t.add_argument("--threads", type=_bounded(int, 1, 512), help="CPU threads (default: torch's choice)")
    data_flags(t)
    t.set_defaults(func=cmd_train)

    tj = sub.add_parser("train-judge", help="train the clean-label judge's reference classifier")
    tj.add_argument("--dataset", choices=DATASETS, required=True)
    tj.add_argument("--epochs", type=_bounded(int, 1, 1000), help="default: 3 (MNIST family), 15 (CIFAR-10)")
    tj.add_argument("--out", help="folder (default: checkpoints/judges)")
    tj.add_argument("--threads", type=_bounded(int, 1, 512))
    tj.add_argument("--arch", choices=("convnet", "vgg"), default="convnet",
                    help="convnet: the shipped judge; vgg: a deeper, wider one (a second judge network for CIFAR-10, "
                         "written beside it as DATASET_judge_vggWIDTH.pt, seed 1235)")
    tj.add_argument("--width", type=_bounded(int, 4, 512), default=64, help="vgg: first-stage channels")
    tj.add_argument("--quiet", action="store_true")
    data_flags(tj)
    tj.set_defaults(func=cmd_train_judge)

    ts = sub.add_parser("train-suite", help="train a dataset's four models (softmax/LGM x high-d/2-D), "
                        "resumable: rerun the same command to continue")
    ts.add_argument("--dataset", choices=DATASETS, required=True)
    ts.add_argument("--out", required=True, help="folder for the checkpoints and their per-epoch state")
    ts.add_argument("--epochs", type=_bounded(int, 1, 1000), default=30)
    ts.add_argument("--batch-size", type=_bounded(int, 1, 4096), default=128)
    ts.add_argument("--lr", type=_bounded(float, 1e-6, 10.0), default=0.1)
    ts.add_argument("--weight-decay", type=_bounded(float, 0.0, 1.0), default=5e-4)
    ts.add_argument("--margin-warmup", type=_bounded(float, 0.0, 100.0), default=1.0)
    ts.add_argument("--seed", type=_bounded(int, 0, 2**31 - 1), default=0)
    ts.add_argument("--threads", type=_bounded(int, 1, 512), help="CPU threads (default: torch's choice)")
    ts.add_argument("--only", nargs="+", choices=sorted({f"{h}_d{d}" for suite in SUITES.values() for h, d in suite}),
                    help="train only these models of the suite (e.g. one per process, side by side on a GPU)")
    ts.add_argument("--split-seed", type=_bounded(int, 0, 2**31 - 1),
                    help="train the high-d pair on the seeded half of the classes kept for pretraining "
                         "(the new-classes transfer setting; names get _splitS)")
    ts.add_argument("--quiet", action="store_true")
    data_flags(ts)
    ts.set_defaults(func=cmd_train_suite)

    e = sub.add_parser("evaluate", help="test accuracy of a checkpoint, as JSON")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--limit", type=_bounded(int, 1, 10_000_000), help="a stratified sample of N test images")
    data_flags(e)
    e.set_defaults(func=cmd_evaluate)

    def attack_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--checkpoint", required=True)
        sp.add_argument("--attack", choices=ATTACKS, default="fc")
        sp.add_argument("--target-index", type=_bounded(int, 0, 10_000_000), required=True,
                        help="index of the target in the test split")
        sp.add_argument("--base-class", type=_bounded(int, 0, 9), required=True)
        sp.add_argument("--n-poisons", type=_bounded(int, 1, 500), default=5)
        sp.add_argument("--no-judge", action="store_true", help="skip the clean-label judge")
        sp.add_argument("--seed", type=_bounded(int, 0, 2**31 - 1), default=0,
                        help="seeds the trial's draws, the attack's restarts and the victim")
        group = sp.add_argument_group("attack settings", "from the attack registry (core.attacks.ATTACKS); "
                                      "unset: the attack's default for the data set")
        for name, (f, owner, helps, lo, hi) in _attack_knobs().items():
            art = f" (ART: {f.metadata['art']})" if f.metadata.get("art") else ""
            flags = [f"--{name.replace('_', '-')}", *_ALIASES.get(name, ())]
            text = "; ".join(f"{h} ({', '.join(users)})" for h, users in helps.items()) + art
            if f.metadata.get("choices"):
                group.add_argument(*flags, dest=name, choices=f.metadata["choices"], default=None,
                                   help=text.replace("%", "%%"))
            else:
                group.add_argument(*flags, dest=name, type=_bounded(knob_type(f, owner), lo, hi),
                                   default=_CLI_DEFAULTS.get(name), help=text.replace("%", "%%"))
        data_flags(sp)

    c = sub.add_parser("craft", help="craft poisons against a checkpoint; JSON summary, poisons to --out")
    attack_flags(c)
    c.add_argument("--out", help="write poisons, bases, target, parameters and trajectory (.npz)")
    c.set_defaults(func=cmd_craft)

    a = sub.add_parser("attack", help="craft, retrain a victim, print the outcome record")
    attack_flags(a)
    a.add_argument("--setting", choices=SETTINGS, default="transfer")
    a.add_argument("--n-clean", type=_bounded(int, 10, 1_000_000), default=1000, help="clean retraining images")
    a.add_argument("--n-test", type=_bounded(int, 10, 1_000_000), default=1000, help="test images for accuracy")
    a.add_argument("--epochs", type=_bounded(int, 1, 100), default=1, help="end2end fine-tuning epochs")
    a.add_argument("--defences", nargs="+", default=["none"], choices=("none",) + tuple(DEFENCES),
                   help="retrain one victim per filter (none: no filter)")
    a.set_defaults(func=cmd_attack)

    x = sub.add_parser("experiment", help="run (or resume) an experiment grid from a JSON config")
    x.add_argument("--config", required=True)
    x.add_argument("--out", required=True)
    x.add_argument("--n-jobs", type=_bounded(int, -1, 512), help="joblib workers (-1: all cores)")
    x.add_argument("--backend", help="joblib backend (loky, threading, or a registered ray/dask)")
    x.add_argument("--trials", type=_bounded(int, 1, 100_000), help="override the config's trials per cell")
    x.add_argument("--quiet", action="store_true")
    x.set_defaults(func=cmd_experiment)

    ld = sub.add_parser("ladder", help="run (or resume) the adaptive ladder: each filter against the attack that "
                        "optimises its own statistic, at growing stealth weights")
    ld.add_argument("--config", required=True, help="an experiment config with one attack and \"weights\"")
    ld.add_argument("--out", required=True)
    ld.add_argument("--n-jobs", type=_bounded(int, -1, 512), help="joblib workers (-1: all cores)")
    ld.add_argument("--trials", type=_bounded(int, 1, 100_000), help="override the config's trials per cell")
    ld.add_argument("--only", nargs="+", metavar="STEALTH:W", help="grow only these adaptive rungs (and the static "
                    "one), e.g. centroid:0.1; ladder.json is still written from every rung's results")
    ld.add_argument("--quiet", action="store_true")
    ld.set_defaults(func=cmd_ladder)

    rp = sub.add_parser("replay", help="retrain other victims (head controls, augmentation, filter rules) on the "
                        "poisons an experiment already crafted, without crafting again")
    rp.add_argument("--experiment", required=True, help="an experiment folder")
    rp.add_argument("--out", required=True)
    rp.add_argument("--victims", required=True,
                    help='JSON {name: {"head": ..., knob: value}}; the first is filtered by every defence')
    rp.add_argument("--defences", nargs="+", choices=("none",) + tuple(DEFENCES), help="default: the experiment's")
    rp.add_argument("--attacks", nargs="+", choices=tuple(ATTACKS), help="only these attacks' trials")
    rp.add_argument("--trials", type=_bounded(int, 1, 100_000), help="only trials with an index below this")
    rp.add_argument("--n-jobs", type=_bounded(int, 1, 512), default=1)
    rp.add_argument("--quiet", action="store_true")
    rp.set_defaults(func=cmd_replay)

    rj = sub.add_parser("rejudge", help="judge an experiment's stored poisons again with another judge "
                        "(no crafting, no retraining); writes EXPERIMENT/rejudged/JUDGE.json")
    rj.add_argument("--experiment", required=True, help="an experiment folder")
    rj.add_argument("--judge", required=True, choices=tuple(JUDGES))
    rj.add_argument("--labelled-out", help="also write the labelled data sets (kept poisons only) as an experiment "
                    "folder, e.g. checkpoints/experiments/NAME_labelled")
    rj.add_argument("--quiet", action="store_true")
    rj.set_defaults(func=cmd_rejudge)

    xb = sub.add_parser("export-benchmark", help="write one experiment trial's poisons in the poisoning benchmark's "
                        "format (poisons.pickle, base_indices.pickle, target.pickle)")
    xb.add_argument("--experiment", required=True, help="an experiment folder (e.g. checkpoints/experiments/cifar10)")
    xb.add_argument("--trial", required=True, help="a trial's name in its trials/ folder, without .json")
    xb.add_argument("--out", required=True)
    xb.add_argument("--data-dir")
    xb.set_defaults(func=cmd_export_benchmark)

    pm = sub.add_parser("precompute-maps", help="ship the UMAP maps of the high-d checkpoints and every checkpoint's demo features")
    pm.add_argument("--force", action="store_true", help="refit maps that already pass their check")
    pm.set_defaults(func=cmd_precompute_maps)

    m = sub.add_parser("make-demo", help="write the embedded demo sample from a full dataset")
    m.add_argument("--dataset", choices=DATASETS, required=True)
    m.add_argument("--train-per-class", type=_bounded(int, 1, 10_000), default=200)
    m.add_argument("--test-per-class", type=_bounded(int, 1, 10_000), default=100)
    m.add_argument("--seed", type=_bounded(int, 0, 2**31 - 1), default=0)
    m.add_argument("--data-dir")
    m.set_defaults(func=cmd_make_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (DataUnavailable, CheckpointError, TrainingDiverged, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=float))
    return 0
