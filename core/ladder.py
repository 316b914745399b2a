"""The adaptive ladder: each filter against the attack that optimises its own statistic.

Carlini and Wagner's and Tramer et al.'s practice for a defence: attack it with a loss that knows it.
For every filter the ladder runs the defence-aware attack with the stealth term that mirrors that
filter's statistic (``core.attacks.stealth_for``: the likelihood for the LGM filter, the distance
to the class centroid for centroid, spectral and activation clustering, the distance to the
poison's own base for deep k-NN), at growing weights w, and reports per (filter, w) the share of
poisons the filter flags against the victim's success with and without it, each with its Wilson
interval. w = 0 is the static attack, shared by every filter's curve.

Each rung is an ordinary experiment (``core.experiments``: the same plans, judges, victims and
filters, resumable) in a folder of its own: ``OUT/static`` for w = 0, ``OUT/<stealth>/w<w>``
otherwise; ``ladder.json`` holds the rows. The question each curve answers: can an attacker who
knows the filter keep the poisons both unflagged and effective, and at what cost?
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .attacks import ATTACKS, STEALTH, stealth_for
from .defences import applies
from .checkpoints import read_meta
from .experiments import ExperimentConfig, run_experiment, victim_classes
from .report import load_trials, outcomes, paired
from .stats import wilson_interval

LADDER_WEIGHTS = (0.0, 0.1, 1.0, 10.0, 100.0)  # the sweep of the stealth weight


@dataclass(frozen=True)
class LadderConfig:
    """An experiment config (one attack, the filters to climb) and the stealth weights."""

    experiment: ExperimentConfig
    weights: tuple[float, ...] = LADDER_WEIGHTS
    # a stealth term whose scale differs gets its own sweep: {stealth: weights}
    stealth_weights: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.experiment.attacks) != 1:
            raise ValueError("a ladder climbs one attack: give the experiment exactly one")
        attack = self.experiment.attacks[0]
        if "stealth" not in ATTACKS[attack].settings.knobs():
            raise ValueError(f"{ATTACKS[attack].label} has no stealth term; use one of "
                             + ", ".join(a for a, e in ATTACKS.items() if "stealth" in e.settings.knobs()))
        if not self.filters:
            raise ValueError("a ladder needs at least one filter among the experiment's defences")
        for ws in (self.weights, *self.stealth_weights.values()):
            if not ws or any(not 0 <= w <= 1e4 for w in ws) or 0.0 not in ws:
                raise ValueError("weights must lie in [0, 1e4] and include 0 (the static attack)")
        unknown = set(self.stealth_weights) - set(STEALTH)
        if unknown:
            raise ValueError(f"stealth_weights names unknown stealth terms {sorted(unknown)}")

    def weights_for(self, stealth: str) -> tuple[float, ...]:
        return tuple(self.stealth_weights.get(stealth, self.weights))

    @property
    def attack(self) -> str:
        return self.experiment.attacks[0]

    @property
    def filters(self) -> tuple[str, ...]:
        return tuple(d for d in self.experiment.defences if d != "none")

    @property
    def new_classes(self) -> bool:
        """The models were pretrained on other classes than the victim's (``train-suite --split-seed``)."""
        return any(victim_classes(p) is not None for p in self.experiment.models.values())

    def stealth(self, defence: str) -> str:
        return stealth_for(defence, self.new_classes)

    @classmethod
    def from_dict(cls, raw: dict, where: str = "ladder config") -> "LadderConfig":
        raw = dict(raw)
        weights = tuple(float(w) for w in raw.pop("weights", LADDER_WEIGHTS))
        per = {k: tuple(sorted({float(w) for w in v})) for k, v in raw.pop("stealth_weights", {}).items()}
        return cls(ExperimentConfig.from_dict(raw, where), tuple(sorted(set(weights))), per)

    @classmethod
    def from_file(cls, path: str | Path) -> "LadderConfig":
        return cls.from_dict(json.loads(Path(path).read_text()), str(path))

    def rungs(self) -> dict[tuple[str | None, float], tuple[str, ExperimentConfig]]:
        """{(stealth or None for static, w): (folder, experiment)}: one experiment per rung, the
        static one shared by every filter."""
        out: dict = {(None, 0.0): ("static", self._at(None, 0.0))}
        for stealth in dict.fromkeys(self.stealth(d) for d in self.filters):
            if not self._models_for(stealth):  # e.g. the likelihood with no LGM model: no rung to climb
                continue
            for w in self.weights_for(stealth):
                if w:
                    out[(stealth, w)] = (f"{stealth}/w{w:g}", self._at(stealth, w))
        return out

    def _models_for(self, stealth: str) -> dict:
        """The models some filter mirrored by ``stealth`` can filter for (the likelihood: the LGM
        model only); an adaptive rung crafts against those alone."""
        heads = {n: read_meta(p)["config"]["head"] for n, p in self.experiment.models.items()}
        return {n: p for n, p in self.experiment.models.items()
                if any(self.stealth(d) == stealth and applies(d, heads[n]) for d in self.filters)}

    def _at(self, stealth: str | None, w: float) -> ExperimentConfig:
        mine = dict(self.experiment.attack_settings.get(self.attack, {}))
        mine.update(adaptive_weight=w, **({"stealth": stealth} if stealth else {}))
        models = self._models_for(stealth) if stealth else self.experiment.models
        # an adaptive rung crafts against some models only, but draws the static rung's targets: paired
        targets = dict(self.experiment.models) if models != self.experiment.models else None
        return self.experiment.replace(attack_settings={self.attack: mine}, models=models, target_models=targets)


def parse_rung(text: str) -> tuple[str, float]:
    """``STEALTH:W`` (e.g. ``centroid:0.1``), one adaptive rung, as ``--only`` names it."""
    stealth, sep, w = text.partition(":")
    try:
        weight = float(w)
    except ValueError:
        weight = -1.0
    if not sep or stealth not in STEALTH or weight <= 0:
        raise ValueError(f"{text!r}: name a rung as STEALTH:W with W > 0 and STEALTH one of {', '.join(STEALTH)}")
    return stealth, weight


def run_ladder(cfg: LadderConfig, out: str | Path, progress: bool = True,
               only: set[tuple[str, float]] | None = None) -> list[dict]:
    """Run (or resume) every rung, or with ``only`` the static rung and those adaptive rungs (the
    CPU where the evidence is wanted; the rest keep what they have), then write ``ladder.json``
    from every rung's results: one row per (model, filter, w), and the ``others``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rungs = cfg.rungs()
    unknown = set(only or ()) - set(rungs)
    if unknown:
        raise ValueError(f"the config has no rung {sorted(unknown)}; its adaptive rungs: "
                         + ", ".join(f"{s}:{w:g}" for s, w in rungs if s))
    for key, (folder, exp) in rungs.items():
        if only is None or key[0] is None or key in only:
            run_experiment(exp, out / folder, progress=progress, gallery=False)
    return write_ladder(cfg, out)


def write_ladder(cfg: LadderConfig, out: str | Path) -> list[dict]:
    """``ladder.json`` from the rungs finished so far (a ladder still climbing shows what it has):
    ``rows``, each filter against its own rungs, and ``others``, each filter behind the other
    filters' adaptive rungs (an attacker who hides from one statistic may slip past another)."""
    out = Path(out)
    rows = ladder_rows(cfg, out)
    (out / "ladder.json").write_text(json.dumps({"attack": cfg.attack, "weights": list(cfg.weights),
                                                 "stealth_weights": {k: list(v) for k, v in cfg.stealth_weights.items()},
                                                 "filters": list(cfg.filters), "rows": rows,
                                                 "others": rival_rows(cfg, out)}, indent=2) + "\n")
    return rows


def _rate(successes: int, n: int) -> dict:
    return {"rate": successes / n if n else 0.0, "ci95": list(wilson_interval(successes, n))}


def _counted(folder: Path, cache: dict) -> list[dict]:
    """A rung's trial records that its ``results.json`` counts (trials still being written while a
    round runs are left out), read once per ladder written."""
    if folder not in cache:
        n = json.loads((folder / "results.json").read_text())["config"]["trials"]
        cache[folder] = [r for r in load_trials(folder) if r["trial"] < n]
    return cache[folder]


def _rung_rows(folder: Path, defence: str, stealth: str, w: float, victim: str | None,
               static: Path | None = None, cache: dict | None = None) -> list[dict]:
    """Per model, ``defence`` behind one rung's poisons: the share it flags (Wilson over poisons),
    the victim's success without and behind it (Wilson over trials), clean accuracy after filtering
    and how clean-label the poisons were. ``victim``: a control's name (default: the experiment's own).
    With the ``static`` rung's folder, ``vs_static``: success behind the filter paired by trial with
    the static attack's (the same targets and bases), discordant counts and the exact McNemar p."""
    results = folder / "results.json"
    if not results.is_file():
        return []
    cells = json.loads(results.read_text())["cells"]
    cache = {} if cache is None else cache
    paired_with = static is not None and (static / "results.json").is_file()
    rows = []
    for model in sorted({c["model"] for c in cells}):
        mine = [c for c in cells if c["model"] == model
                and (c["victim"] == victim if victim else c.get("primary", c["victim"] == "warm"))]
        by = {c["defence"]: c for c in mine}
        if defence not in by or "none" not in by:
            continue
        f, none = by[defence], by["none"]
        n_poisons = f["trials"] * f["n_poisons"]
        flagged = round(f["poisons_flagged"] * n_poisons)
        rows.append({"model": model, "victim": f["victim"], "filter": defence, "stealth": stealth,
                     "weight": w, "trials": f["trials"], "n_poisons": f["n_poisons"],
                     "flagged": {"share": f["poisons_flagged"], "ci95": list(wilson_interval(flagged, n_poisons))},
                     "clean_flagged": f["clean_flagged"],
                     "success_unfiltered": {"successes": none["successes"], **_rate(none["successes"], none["trials"])},
                     "success_filtered": {"successes": f["successes"], **_rate(f["successes"], f["trials"])},
                     "clean_acc_after": f["clean_acc_after"], "clean_label_rate": f["clean_label_rate"],
                     "mean_feature_distance": f["mean_feature_distance"]})
        if paired_with:
            pair = paired(outcomes(_counted(folder, cache), model, victim, defence),
                          outcomes(_counted(static, cache), model, victim, defence))
            if pair["pairs"]:
                rows[-1]["vs_static"] = {"pairs": pair["pairs"], "adaptive": pair["left"], "static": pair["right"],
                                         "only_adaptive": pair["only_left"], "only_static": pair["only_right"],
                                         "p": pair["p"]}
    return rows


def ladder_rows(cfg: LadderConfig, out: str | Path, victim: str | None = None) -> list[dict]:
    """Per (model, filter, w): the filter against the rung of its own statistic (``_rung_rows``)."""
    rows, cache = [], {}
    rungs = cfg.rungs()
    static = Path(out, rungs[(None, 0.0)][0])
    for defence in cfg.filters:
        stealth = cfg.stealth(defence)
        for w in cfg.weights_for(stealth):
            if w and (stealth, w) not in rungs:
                continue
            folder = static if w == 0 else Path(out, rungs[(stealth, w)][0])
            rows += _rung_rows(folder, defence, stealth, w, victim, static if w else None, cache)
    return rows


def rival_rows(cfg: LadderConfig, out: str | Path, victim: str | None = None) -> list[dict]:
    """Per (model, filter, stealth, w): a filter behind an adaptive rung aimed at *another*
    statistic. A filter's own curve is not its worst case: poisons kept near the class centre may
    also look likely under the class Gaussian."""
    rows, cache = [], {}
    rungs = cfg.rungs()
    static = Path(out, rungs[(None, 0.0)][0])
    for (stealth, w), (folder, _) in rungs.items():
        if stealth is None:
            continue
        for defence in cfg.filters:
            if cfg.stealth(defence) != stealth:
                rows += _rung_rows(Path(out, folder), defence, stealth, w, victim, static, cache)
    return rows


def stealth_labels() -> dict[str, str]:
    """What each stealth term keeps typical, for the write-ups and the dashboard."""
    return {name: s.label for name, s in STEALTH.items()}
