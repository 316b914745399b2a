"""Calibrate CIFAR-10 clean-label judges: which reference would a person agree with?

    POISONLAB_DATA_DIR=DIR python bench/judge_calibration.py --out bench/results/judge_calibration_cifar10.json

A judge stands in for the labeller (``core.judge``). Each candidate reference (one network or an
ensemble of shipped networks the attacker never queried, optionally after an input purification)
is measured on what a person gets right and what the attack must not buy:

- ``clean_acc``: accuracy on stratified clean test images of the victim's classes (a call of any
  other class is wrong);
- ``noise_pass``: of the images it gets right, the share still right after every pixel moves by
  +-8/255 with seeded random signs (a person does not notice; the judge must not either);
- ``poisons_base``: the share of shipped poisons (crafted at 8/255 against the attacked models,
  by eye their base class) it calls the base class, per experiment;
- ``pgd_true``: on PGD examples (8/255, 10 steps) against each attacked model (untargeted on its
  own head; on a split model, pushing the feature away from the clean one), the share it still
  names the true class: how far the attack's perturbation transfers;
- ``blend_base``: a 50/50 blend of a base and a test image of another victim class, the share
  called the base class (a judge that says "base" to everything passes the rest);
- the pixel 5-NN vote's own accuracy on the same clean images (kept in a judge only where stated).

Two settings: "new classes" (the victim learns airplane, automobile, dog, ship, truck; the attacked
models are the split-0 pair, so the full-task d = 128 pair never met the attacker) and "seen
classes" (all ten classes; the attacked models are the full-task d = 128 pair).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.checkpoints import load_checkpoint
from core.data import load_dataset, stratified_sample
from core.judge import JUDGE_DIR, KNN_K, PURIFIERS, Judge
from core.models import extract_features

ROOT = Path(__file__).resolve().parent.parent
JUDGE = str(JUDGE_DIR / "cifar10_judge.pt")
FULL = ("checkpoints/cifar10_softmax_d128.pt", "checkpoints/cifar10_lgm_d128.pt")
LOW_D = ("checkpoints/cifar10_softmax_d2.pt", "checkpoints/cifar10_lgm_d2.pt")
SPLIT = ("checkpoints/newclasses/cifar10_split0_softmax_d128.pt", "checkpoints/newclasses/cifar10_split0_lgm_d128.pt")
SETTINGS = {
    "new classes": {"classes": (0, 1, 5, 8, 9), "attacked": SPLIT,
                    "experiments": ("meanshift_newclasses_cifar10", "meanshift50_newclasses_cifar10",
                                    "newclasses_cifar10", "noise_newclasses_cifar10"),
                    "candidates": {"convnet": (JUDGE,), "convnet + full-task pair": (JUDGE, *FULL),
                                   "convnet + full-task + 2-D pairs": (JUDGE, *FULL, *LOW_D)}},
    "seen classes": {"classes": None, "attacked": FULL,
                     "experiments": ("benchmark_cifar10", "meanshift_cifar10"),
                     "candidates": {"convnet": (JUDGE,), "convnet + 2-D pair": (JUDGE, *LOW_D)}},
}
PURIFY = PURIFIERS
EPS = 8 / 255


def judge_labels(paths: tuple[str, ...], images: np.ndarray, purify: str, ds) -> np.ndarray:
    """The candidate's call (``core.judge.Judge``'s reference vote, no k-NN) in ``ds``'s labels."""
    members = [_load(p) for p in paths]
    return Judge(members, ds.x_train[:KNN_K + 1], ds.y_train[:KNN_K + 1], class_ids=ds.class_ids,
                 purify=purify, knn=False).reference_labels(images)


@lru_cache(maxsize=None)
def _load(path: str):
    return load_checkpoint(path)[0]


def shipped_poisons(experiments: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{experiment/attack: (poisons uint8 NHWC, base class per poison)} of every finished trial."""
    out: dict[str, list] = {}
    for name in experiments:
        for rec_path in sorted(Path("checkpoints/experiments", name, "trials").glob("*.json")):
            if rec_path.name.endswith(".tmp"):
                continue
            npz = rec_path.with_suffix(".npz")
            if not npz.is_file():
                continue
            rec = json.loads(rec_path.read_text())
            with np.load(npz, allow_pickle=False) as z:
                p = z["poisons"]
            out.setdefault(f"{name}/{rec['attack']}", []).append((p, np.full(len(p), rec["base_class"])))
    return {k: (np.concatenate([a for a, _ in v]), np.concatenate([b for _, b in v])) for k, v in out.items()}


def pgd(model_path: str, images: np.ndarray, y: np.ndarray, own_head: bool, steps: int = 10) -> np.ndarray:
    """l_inf PGD at 8/255 against one attacked model: untargeted on its own head where that head
    covers the images' classes, else (a split model) pushing the penultimate feature away from the
    clean image's, the perturbation family the poisons come from."""
    model = _load(model_path).eval()
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = x0.clone()
    yt = torch.from_numpy(y).long()
    with torch.no_grad():
        f0 = model.features(x0)
    x = (x0 + EPS * (2 * torch.rand(x0.shape, generator=torch.Generator().manual_seed(0)) - 1)).clamp(0, 1)
    for _ in range(steps):
        x.requires_grad_(True)
        loss = F.cross_entropy(model(x), yt) if own_head else (model.features(x) - f0).pow(2).sum(1).mean()
        (g,) = torch.autograd.grad(loss, x)
        x = (x.detach() + 2 / 255 * g.sign()).clamp(x0 - EPS, x0 + EPS).clamp(0, 1)
    return np.round(x.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="clean test images per setting (stratified)")
    ap.add_argument("--n-pgd", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    t0 = time.perf_counter()
    full = load_dataset("cifar10")
    rng = np.random.default_rng(args.seed)
    report: dict = {"eps": EPS, "n": args.n, "settings": {}}
    for setting, spec in SETTINGS.items():
        ds = full.restrict(spec["classes"]) if spec["classes"] else full
        idx = stratified_sample(ds.y_test, args.n, np.random.default_rng([args.seed, 1]))
        x, y = ds.x_test[idx], ds.y_test[idx]
        noisy = np.clip(x.astype(np.int16) + rng.choice([-2, 2], size=x.shape) * 4, 0, 255).astype(np.uint8)  # +-8
        pairs = rng.permutation(len(x))
        b_idx = np.flatnonzero(y[pairs] != y)[:200]
        blends = np.round(0.5 * x[b_idx].astype(float) + 0.5 * x[pairs[b_idx]].astype(float)).astype(np.uint8)
        poisons = shipped_poisons(spec["experiments"])
        # PGD examples against each attacked model with a head over this setting's classes (the
        # split models' heads cover the other five classes: their poisons are the shipped ones)
        adv = {}
        for m in spec["attacked"]:
            sub = stratified_sample(y, args.n_pgd, np.random.default_rng([args.seed, 2]))
            adv[Path(m).stem] = (pgd(m, x[sub], y[sub], own_head=spec["classes"] is None), y[sub])
        knn = Judge(load_checkpoint(JUDGE)[0], ds.x_train, ds.y_train).knn_labels(x)
        rows = {}
        for name, paths in spec["candidates"].items():
            for purify in PURIFY:
                lab = judge_labels(paths, x, purify, ds)
                right = lab == y
                row = {"members": [Path(p).relative_to(ROOT).as_posix() if Path(p).is_absolute() else p for p in paths],
                       "purify": purify, "clean_acc": float(right.mean()),
                       "noise_pass": float((judge_labels(paths, noisy, purify, ds) == y)[right].mean()),
                       "blend_base": float((judge_labels(paths, blends, purify, ds) == y[b_idx]).mean()),
                       "poisons_base": {k: float((judge_labels(paths, p, purify, ds) == b).mean())
                                        for k, (p, b) in poisons.items()},
                       "pgd_true": {}}
                for m, (xa, ya) in adv.items():  # how often the attack's perturbation carries over
                    row["pgd_true"][m] = float((judge_labels(paths, xa, purify, ds) == ya).mean())
                rows[f"{name} / {purify}"] = row
                print(setting, name, purify, json.dumps({k: v for k, v in row.items() if k != "members"}), flush=True)
        report["settings"][setting] = {"knn_acc": float((knn == y).mean()),
                                       "poison_counts": {k: int(len(b)) for k, (_, b) in poisons.items()},
                                       "candidates": rows}
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
