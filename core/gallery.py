"""An experiment's poisons, compact enough to page through with no dataset and no crafting.

``build_gallery`` gathers every trial of an experiment folder into two files beside its results:

- ``gallery.npz``: 8-bit targets, bases and poisons, and the penultimate features of each under
  every model of the experiment (so the dashboard can place a poison in both feature spaces); a
  large experiment's arrays are split by trial into ``gallery.npz``, ``gallery.1.npz``, ... so that
  no shipped file passes the repository's 20 MB limit (the header lists them);
- ``gallery.json``: one slim record per trial (what was attacked, the judges' verdict on each
  poison, which filter flagged which poison, each victim's outcome) with offsets into the arrays.

The dashboard ships no training set, so the bases and targets are copied here from the data set
the experiment ran on. ``showcase`` picks the example the Overview opens on, by a stated rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoints import CHECKPOINT_DIR, load_checkpoint
from .data import Dataset, load_dataset, load_demo
from .models import extract_features

GALLERY_NPZ = "gallery.npz"
GALLERY_JSON = "gallery.json"
SHARD_BYTES = 16 * 2**20  # uncompressed bytes per npz file at most: compressed, always under 20 MB


def _shard_name(i: int) -> str:
    return GALLERY_NPZ if i == 0 else f"gallery.{i}.npz"


def gallery_files(exp_dir: str | Path) -> list[Path]:
    """Every npz file of the gallery in ``exp_dir`` (written by any version of ``build_gallery``)."""
    exp_dir = Path(exp_dir)
    return sorted(exp_dir.glob("gallery*.npz"))


def _slim(key: str, rec: dict, start: int, stored: int) -> dict:
    """What the gallery shows of one trial record, with per-poison filter flags. ``stored``: how many
    poisons its npz holds (the crafted count, or fewer in a labelled data set: ``n_stored`` slices the
    arrays, ``n_poisons`` stays the cell's dose)."""
    k = rec["n_poisons"]
    victims = {}
    for name, d in rec["defences"].items():
        flagged = None
        if "poison_flags" in d:
            flagged = [bool(f) for f in d["poison_flags"]]
        elif "poison_scores" in d and d.get("rule", "fpr") == "fpr":
            # records from before per-poison flags were stored: a threshold rule can be read again
            flagged = [bool(s > d["threshold"]) for s in d["poison_scores"]]
        victims[name] = {"success": bool(d["success"]), "pred_after": int(d["pred_after"]), "flagged": flagged,
                         "clean_acc_after": d.get("clean_acc_after"),
                         "auc": d.get("auc"), "scores": d.get("poison_scores"), "threshold": d.get("threshold"),
                         "clean_quantiles": d.get("clean_score_quantiles")}
    judge = rec.get("judge") or {}
    return {"key": key, "model": rec["model"], "trial": rec["trial"], "attack": rec["attack"],
            "setting": rec["setting"], "n_poisons": k, "target_index": rec["target_index"],
            "target_label": rec["target_label"], "base_class": rec["base_class"], "eps": rec.get("eps"),
            "linf": rec["linf"], "feature_distance": rec["feature_distance"],
            "clean_label": bool(rec.get("clean_label")), "judge": judge, "victims": victims, "start": start,
            "n_stored": stored,
            # the experiment's other victims on the same poisons, with no filter
            "controls": {n: {"success": bool(o["none"]["success"]), "pred_after": int(o["none"]["pred_after"]),
                             "clean_acc_after": float(o["none"]["clean_acc_after"])}
                         for n, o in rec.get("victims", {}).items() if "none" in o},
            "labelled": rec.get("labelled")}


def _write_shards(exp_dir: Path, per_trial: list[dict[str, np.ndarray]], shard_bytes: int) -> list[str]:
    """Consecutive trials' arrays, concatenated into as few npz files as keep each under ``shard_bytes``
    (uncompressed; one trial alone may exceed it); stale files of an earlier build are removed."""
    groups, size = [[]], 0
    for arrays in per_trial:
        nbytes = sum(a.nbytes for a in arrays.values())
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(arrays)
        size += nbytes
    names = [_shard_name(i) for i in range(len(groups))]
    for old in gallery_files(exp_dir):
        if old.name not in names:
            old.unlink()
    for name, group in zip(names, groups):
        np.savez_compressed(exp_dir / name, **{k: np.concatenate([a[k] for a in group]) for k in group[0]})
    return names


def build_gallery(exp_dir: str | Path, data: Dataset | None = None, data_dir: str | None = None,
                  shard_bytes: int = SHARD_BYTES) -> Path:
    """Write ``gallery.npz`` (split by trial when large) and ``gallery.json`` for the experiment in
    ``exp_dir``; returns the json path.

    ``data`` is the data set the experiment ran on (loaded from its config when not given).
    """
    exp_dir = Path(exp_dir)
    cfg = json.loads((exp_dir / "config.json").read_text())
    models = {name: load_checkpoint(path) for name, path in cfg["models"].items()}
    datasets = {meta["config"]["dataset"] for _, meta in models.values()}
    if len(datasets) != 1:
        raise ValueError(f"a gallery holds one data set; this experiment has {sorted(datasets)}")
    name = datasets.pop()
    if data is None:
        data = load_demo(name) if cfg.get("demo") else load_dataset(name, data_dir or cfg.get("data_dir"))
        splits = {tuple(meta["class_split"]["victim_classes"]) for _, meta in models.values() if meta.get("class_split")}
        if splits:  # indices of a new-classes experiment point into the victim's classes only
            data = data.restrict(splits.pop())
    trials, targets, bases, poisons = [], [], [], []
    start = 0
    for path in sorted((exp_dir / "trials").glob("*.json")):
        rec = json.loads(path.read_text())
        npz = path.with_suffix(".npz")
        if "skipped" in rec or not npz.is_file():
            continue
        with np.load(npz) as z:
            p = z["poisons"]
        trials.append(_slim(path.stem, rec, start, len(p)))
        targets.append(data.x_test[rec["target_index"]])
        bases.append(data.x_train[np.asarray(rec["base_indices"])])
        poisons.append(p)
        start += len(p)
    if not trials:
        raise ValueError(f"{exp_dir}: no trial with stored poisons (made before poisons were kept?)")
    arrays = {"targets": np.stack(targets), "bases": np.concatenate(bases), "poisons": np.concatenate(poisons)}
    for model_name, (model, _) in models.items():
        for part in ("targets", "bases", "poisons"):
            arrays[f"{part}__{model_name}"] = extract_features(model, arrays[part]).numpy().astype(np.float32)
    per_trial = []  # each trial's slice of every array, so that files split between trials
    for i, t in enumerate(trials):
        sl = slice(t["start"], t["start"] + t["n_stored"])
        per_trial.append({k: a[i:i + 1] if k.startswith("targets") else a[sl] for k, a in arrays.items()})
    shards = _write_shards(exp_dir, per_trial, shard_bytes)
    # a new-classes experiment's labels index the victim's classes (``Dataset.restrict``), so the
    # gallery names those; ``class_ids`` places them in the full data set (None: all of it)
    header = {"dataset": name, "classes": list(data.classes),
              "class_ids": list(data.class_ids) if data.class_ids is not None else None,
              "models": {n: {"path": cfg["models"][n], "head": meta["config"]["head"],
                             "feat_dim": meta["config"]["feat_dim"]} for n, (_, meta) in models.items()},
              "config": cfg, "trials": trials, "shards": shards}
    out = exp_dir / GALLERY_JSON
    out.write_text(json.dumps(header) + "\n")
    return out


@dataclass
class Gallery:
    """A loaded gallery: ``trials`` (slim records) and the image and feature arrays they index."""

    dataset: str
    classes: list[str]
    models: dict
    config: dict
    trials: list[dict]
    arrays: dict[str, np.ndarray]
    class_ids: tuple[int, ...] | None = None  # the victim's classes in the full data set (new classes)

    def images(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(target [H,W,C], bases [k,H,W,C], poisons [k,H,W,C]) of trial ``i``, all uint8."""
        t = self.trials[i]
        sl = slice(t["start"], t["start"] + t.get("n_stored", t["n_poisons"]))
        return self.arrays["targets"][i], self.arrays["bases"][sl], self.arrays["poisons"][sl]

    def features(self, i: int, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(target [d], bases [k,d], poisons [k,d]) of trial ``i`` under ``model``'s feature extractor."""
        t = self.trials[i]
        sl = slice(t["start"], t["start"] + t.get("n_stored", t["n_poisons"]))
        return (self.arrays[f"targets__{model}"][i], self.arrays[f"bases__{model}"][sl],
                self.arrays[f"poisons__{model}"][sl])

    def find(self, model: str, attack: str, trial: int, setting: str = "transfer",
             n_poisons: int | None = None) -> int | None:
        """Index of the trial with these keys (the same target and bases were used for every model)."""
        for i, t in enumerate(self.trials):
            if (t["model"], t["attack"], t["trial"], t["setting"]) == (model, attack, trial, setting) and \
                    (n_poisons is None or t["n_poisons"] == n_poisons):
                return i
        return None

    def cell(self, model: str, attack: str, setting: str = "transfer", n_poisons: int | None = None) -> list[int]:
        return [i for i, t in enumerate(self.trials)
                if (t["model"], t["attack"], t["setting"]) == (model, attack, setting)
                and (n_poisons is None or t["n_poisons"] == n_poisons)]


def shipped_galleries(root: str | Path | None = None) -> dict[str, Path]:
    """Experiment folders under ``root`` (default: the shipped ``checkpoints/experiments``) that hold a
    gallery, by folder name."""
    root = Path(root) if root is not None else CHECKPOINT_DIR / "experiments"
    return {p.parent.name: p.parent for p in sorted(root.glob(f"*/{GALLERY_JSON}"))}


def load_gallery(exp_dir: str | Path) -> Gallery:
    exp_dir = Path(exp_dir)
    header = json.loads((exp_dir / GALLERY_JSON).read_text())
    parts = []
    for name in header.get("shards", [GALLERY_NPZ]):  # galleries from before shards: one file
        with np.load(exp_dir / name) as z:
            parts.append({k: z[k] for k in z.files})
    arrays = {k: np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in parts[0]}
    ids = header.get("class_ids")
    return Gallery(header["dataset"], header["classes"], header["models"], header["config"], header["trials"], arrays,
                   tuple(ids) if ids is not None else None)


SHOWCASE_RULE = ("Shown: the first trial, by trial number, in which every poison is judged clean-label by the "
                 "experiment's judges (in a labelled experiment, the poisons its judge rejected were dropped before "
                 "any victim was retrained), the softmax victim (no filter) was poisoned and the LGM victim, attacked "
                 "on the same target with the same bases and clean-label poisons, was not; where no trial has both, "
                 "the first clean-label poisoning of the softmax victim (in a labelled experiment each side keeps "
                 "its own accepted poisons). Across attacks and across a data set's experiments in the chosen "
                 "feature space, one with such a contrast comes first, then the higher clean-label success count; "
                 "ties go to feature collision, convex polytope, bullseye polytope, class-mean shift, in that order.")


@dataclass(frozen=True)
class Showcase:
    """The example the classroom opens on (``SHOWCASE_RULE``), and the measured rate it must be read against."""

    softmax: int  # gallery index of the softmax trial
    lgm: int | None  # the same target and bases crafted against the LGM model
    successes: int  # softmax victims poisoned in this cell (no filter)
    clean_label_successes: int
    trials: int  # trials in this cell
    attack: str = "fc"
    contrast: bool = False  # the LGM victim of the same target was not poisoned, with clean-label poisons

    def strength(self) -> tuple:
        """How strong an opening example this is (larger first): a contrast, then clean-label successes."""
        return (self.contrast, self.clean_label_successes)


def showcase(gallery: Gallery, attacks: tuple[str, ...] = ("fc", "cp", "bp", "cm")) -> Showcase | None:
    """The trial ``SHOWCASE_RULE`` picks in ``gallery`` (the attacks tried in that order: within one
    attack, a contrast first, then the first clean-label success), paired with the LGM trial on the
    same target; None when no trial qualifies. The rule is fixed and stated so the example is not
    cherry-picked in secret; the cell's counts come with it."""
    softmax_name = next((n for n, m in gallery.models.items() if m["head"] == "softmax"), None)
    lgm_name = next((n for n, m in gallery.models.items() if m["head"] == "lgm"), None)
    if softmax_name is None:
        return None
    found = []
    for attack in attacks:
        cell = sorted(gallery.cell(softmax_name, attack), key=lambda i: gallery.trials[i]["trial"])
        hits = [i for i in cell if gallery.trials[i]["victims"]["none"]["success"]]
        clean_hits = [i for i in hits if gallery.trials[i]["clean_label"]]
        if not clean_hits:
            continue

        def partner(i: int) -> int | None:
            t = gallery.trials[i]
            return gallery.find(lgm_name, attack, t["trial"], t["setting"], t["n_poisons"]) if lgm_name else None

        def resists(j: int | None) -> bool:
            return j is not None and gallery.trials[j]["clean_label"] and not gallery.trials[j]["victims"]["none"]["success"]

        contrast = [i for i in clean_hits if resists(partner(i))]
        first = (contrast or clean_hits)[0]
        found.append(Showcase(first, partner(first), len(hits), len(clean_hits), len(cell), attack, bool(contrast)))
    return max(found, key=Showcase.strength, default=None)
