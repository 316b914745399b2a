"""Red-team rounds: a whole class tries to poison one victim whose filter is hidden, and a
leaderboard ranks the attempts.

Why a round is built this way:

- **Everything lives in SQLite** (one embedded file, ``POISONLAB_ROUNDS_DB`` or
  ``~/.local/share/poisonlab/rounds.sqlite``): a round, its students and their submissions survive
  a server restart, and several server threads can write at once (each call opens its own
  connection; a submission is one ``BEGIN IMMEDIATE`` transaction).
- **A submission is data, never code**: poisons as uint8 arrays, the training images they replace
  by index, the target by index; read from an ``.npz`` with ``allow_pickle=False`` and a size cap,
  then checked against the round's rules and the data set (``check_submission``) before it is stored.
  A bad one changes nothing and says why (``RoundError``).
- **Every submission is scored by the same trial pipeline** (``score_submission`` ->
  ``core.pipeline.evaluate_poisons``): judged (clean-label?), filtered by the round's hidden defence
  (caught?), a victim retrained as the round says (fooled?), on one clean set drawn from the
  round's seed, so students are compared on the same victim.
- **A nickname belongs to the browser that took it** (a random token; the store keeps its hash), so
  one student cannot read another's poisons before the reveal or submit in their name.
- **The ranking rule is stated** (``RANKING_RULE``) and is the one sort key ``rank_key``.

Nothing here knows about Streamlit; the dashboard's Red-team and Teacher pages and ``poisonlab
round`` call it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import sqlite3
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .attacks import ATTACKS, Poisons
from .data import Dataset, stratified_sample
from .defences import DEFENCES, applies, get_defence
from .judge import Judge
from .models import Classifier, extract_features
from .pipeline import FeatureBank, TrialPlan, evaluate_poisons
from .victim import VICTIM_HEADS, Retraining

NICKNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{1,19}$")
MAX_SUBMISSION_BYTES = 4 * 1024 * 1024  # 10 CIFAR poisons are ~60 kB compressed: this is generous
MAX_INFLATED_BYTES = 32 * 1024 * 1024  # 25 CIFAR images are 77 kB: anything near this is hostile
MAX_ROUND_POISONS = 25
ROUND_CLEAN, ROUND_TEST = 500, 500  # the lab's sizes: one class shares one server
RANKING_RULE = ("Best first: the victim fooled with every poison clean-label and none caught; then fooled "
                "although some poisons were caught (fewer caught first); then not fooled. Within each group: "
                "the smaller pixel budget used, then fewer poisons, then the earlier submission. Poisons that "
                "are not all clean-label do not count as a success.")


class RoundError(ValueError):
    """A request the round refuses, with a message meant for the person who made it."""


def default_db_path() -> Path:
    """Where rounds are stored unless ``POISONLAB_ROUNDS_DB`` says otherwise."""
    env = os.environ.get("POISONLAB_ROUNDS_DB")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "poisonlab" / "rounds.sqlite"


def teacher_passphrase() -> str | None:
    """The passphrase the server was started with (``POISONLAB_TEACHER_PASSPHRASE``), or None."""
    value = os.environ.get("POISONLAB_TEACHER_PASSPHRASE", "")
    return value if value.strip() else None


def passphrase_ok(given: str, expected: str | None = None) -> bool:
    """Constant-time comparison; False when no passphrase was set (no teacher page without one)."""
    expected = teacher_passphrase() if expected is None else expected
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def check_nickname(nickname: str) -> str:
    """A nickname as stored: stripped, 2-20 letters, digits, spaces, ``_ . -``, starting with a letter or digit."""
    name = (nickname or "").strip()
    if not NICKNAME.match(name):
        raise RoundError("A nickname has 2 to 20 characters: letters, digits, spaces, _ . - "
                         "(starting with a letter or digit).")
    return name


# --- rules ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoundRules:
    """What the teacher fixes when opening a round. ``defence`` stays hidden until the reveal."""

    dataset: str
    space: str  # the sidebar's feature space of the models ("2-D" / "high-d")
    model: str  # which model of the pair is attacked: "softmax" or "lgm"
    model_path: str  # its checkpoint (the scoring loads it)
    head_type: str  # that model's head ("softmax", "lgm"): which defences apply
    victim_head: str  # how the victim is retrained: a ``core.victim.VICTIM_HEADS`` name
    defence: str  # "none" or a ``core.defences.DEFENCES`` name
    max_level: int  # the largest pixel change allowed, out of 255
    max_poisons: int
    minutes: float
    seed: int = 0  # draws the clean retraining set every submission is scored on

    def __post_init__(self) -> None:
        if self.victim_head not in VICTIM_HEADS:
            raise RoundError(f"unknown victim {self.victim_head!r}; choose one of {', '.join(VICTIM_HEADS)}")
        if self.defence != "none" and self.defence not in DEFENCES:
            raise RoundError(f"unknown defence {self.defence!r}; choose none or one of {', '.join(DEFENCES)}")
        if not applies(self.defence, self.head_type):
            raise RoundError(f"the {get_defence(self.defence).label} filter does not apply to the {self.model} model")
        for name, value, lo, hi in (("max_level", self.max_level, 1, 255),
                                    ("max_poisons", self.max_poisons, 1, MAX_ROUND_POISONS),
                                    ("minutes", self.minutes, 1, 240), ("seed", self.seed, 0, 2**31 - 1)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
                raise RoundError(f"{name} must be a number in {lo}..{hi}, got {value!r}")

    def public(self) -> dict:
        """What a student may see before the reveal (everything but the defence)."""
        return {k: v for k, v in asdict(self).items() if k != "defence"}


@dataclass(frozen=True)
class Round:
    id: int
    rules: RoundRules
    opened: float  # unix time
    revealed: bool
    ended: float | None

    @property
    def deadline(self) -> float:
        return self.opened + 60.0 * self.rules.minutes

    def accepting(self, now: float | None = None) -> bool:
        return self.ended is None and (time.time() if now is None else now) < self.deadline

    def seconds_left(self, now: float | None = None) -> float:
        return max(0.0, self.deadline - (time.time() if now is None else now)) if self.ended is None else 0.0


# --- submissions ------------------------------------------------------------------------------------------

def _check_npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Refuse an array whose header claims more than the cap (or is not a plain .npy)."""
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            shape, _, dtype = (np.lib.format.read_array_header_1_0(fh) if version == (1, 0)
                               else np.lib.format.read_array_header_2_0(fh))
        except (ValueError, TypeError) as exc:
            raise RoundError(f"{info.filename} is not a plain array ({exc}).") from None
    if dtype.hasobject:
        raise RoundError("The file holds Python objects; a submission holds numbers only.")
    if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > MAX_INFLATED_BYTES:
        raise RoundError(f"{info.filename} claims an array of shape {shape}: far larger than a submission.")


@dataclass(frozen=True)
class Submission:
    """Poisons as plain data: uint8 NHWC images, the training images they are made from (by index
    into the data set the lab shows), the target (by index into its test split)."""

    poisons: np.ndarray  # uint8 [k, H, W, C]
    base_indices: np.ndarray  # int64 [k]
    base_class: int
    target_index: int
    attack: str

    def to_npz(self) -> bytes:
        out = io.BytesIO()
        np.savez_compressed(out, poisons=self.poisons, base_indices=self.base_indices,
                            base_class=np.int64(self.base_class), target_index=np.int64(self.target_index),
                            attack=np.str_(self.attack))
        return out.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> "Submission":
        """Read the Poison lab's ``.npz`` download (or ``to_npz``) without unpickling anything."""
        if len(data) > MAX_SUBMISSION_BYTES:
            raise RoundError(f"The file is {len(data) / 2**20:.1f} MB; a submission is at most "
                             f"{MAX_SUBMISSION_BYTES // 2**20} MB.")
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:  # no zip bomb: the sizes before anything is inflated
                inflated = sum(i.file_size for i in zf.infolist())
                if inflated > MAX_INFLATED_BYTES:
                    raise RoundError(f"The file would unpack to {inflated / 2**20:.0f} MB; a submission holds at "
                                     f"most {MAX_INFLATED_BYTES // 2**20} MB of images.")
                for info in zf.infolist():  # numpy allocates what an array's header claims before reading it
                    _check_npy_header(zf, info)
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                missing = {"poisons", "base_indices", "base_class", "target_index"} - set(z.files)
                if missing:
                    raise RoundError("This is not a Poison lab poisons file with the training images it was "
                                     f"made from (missing: {', '.join(sorted(missing))}); download it again from "
                                     "the Poison lab.")
                poisons, bases = z["poisons"], z["base_indices"]
                base_class, target_index = z["base_class"], z["target_index"]
                attack = str(z["attack"]) if "attack" in z.files and z["attack"].dtype.kind == "U" else "unknown"
        except RoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError, MemoryError, zipfile.BadZipFile) as exc:
            raise RoundError(f"Cannot read this file as a Poison lab .npz ({type(exc).__name__}).") from None
        if poisons.dtype != np.uint8 or poisons.ndim != 4:
            raise RoundError("The poisons must be 8-bit images (uint8, images x height x width x channels).")
        if (bases.ndim != 1 or base_class.ndim or target_index.ndim
                or not all(np.issubdtype(a.dtype, np.integer) for a in (bases, base_class, target_index))):
            raise RoundError("base_indices must be a list of integers, base_class and target_index single integers.")
        return cls(poisons, bases.astype(np.int64), int(base_class), int(target_index),
                   attack if attack in ATTACKS else "unknown")

    @classmethod
    def from_lab(cls, plan: TrialPlan, poisons: Poisons, attack: str) -> "Submission":
        """A Poison lab run's poisons against one model (its plan says which images they replace)."""
        if plan.target_index < 0:
            raise RoundError("A round needs a target from the data set, not an uploaded image: choose the "
                             "target by class or in the scatter.")
        imgs = np.clip(np.rint(np.asarray(poisons.poisons) * 255.0), 0, 255).astype(np.uint8)
        return cls(imgs, np.asarray(plan.base_indices, np.int64), int(plan.base_class), int(plan.target_index), attack)

    def level(self, data: Dataset) -> int:
        """The largest pixel change from the base images, out of 255 (what the budget cap bounds)."""
        diff = self.poisons.astype(np.int16) - data.x_train[self.base_indices].astype(np.int16)
        return int(np.abs(diff).max()) if diff.size else 0


def check_submission(rules: RoundRules, data: Dataset, sub: Submission, candidates: np.ndarray | None = None) -> None:
    """Refuse (``RoundError``) a submission that breaks the round's rules or does not fit ``data``.
    ``candidates``: the test images allowed as targets (the ones the models classify correctly)."""
    k = len(sub.poisons)
    if not 1 <= k <= rules.max_poisons:
        raise RoundError(f"This round allows 1 to {rules.max_poisons} poisons; the submission has {k}.")
    if tuple(sub.poisons.shape[1:]) != data.image_shape:
        raise RoundError(f"The poisons are {sub.poisons.shape[1:]} images; {data.name} images are {data.image_shape}. "
                         "Is the sidebar's data set the round's?")
    if len(sub.base_indices) != k or len(np.unique(sub.base_indices)) != k:
        raise RoundError("Each poison needs its own training image (base_indices: one distinct index per poison).")
    if sub.base_indices.min() < 0 or sub.base_indices.max() >= len(data.y_train):
        raise RoundError("A base index is outside the data set's training images.")
    if not 0 <= sub.base_class < len(data.classes) or np.any(data.y_train[sub.base_indices] != sub.base_class):
        raise RoundError("Every base image must be a training image of the base class.")
    if not 0 <= sub.target_index < len(data.y_test):
        raise RoundError("The target index is outside the data set's test images.")
    if int(data.y_test[sub.target_index]) == sub.base_class:
        raise RoundError("The target is already of the base class: nothing to poison.")
    if candidates is not None and sub.target_index not in set(np.asarray(candidates).tolist()):
        raise RoundError("The target must be a test image that both models classify correctly.")
    level = sub.level(data)
    if level > rules.max_level:
        raise RoundError(f"A pixel changed by {level} of 255; this round's budget is {rules.max_level}.")


@dataclass(frozen=True)
class Score:
    """What one submission did to the round's victim."""

    n_poisons: int
    level: int
    clean_label: int  # poisons both judges still call the base class
    caught: int  # poisons the hidden filter flagged
    fooled: bool  # the victim retrained on what the filter kept calls the target the base class
    pred_after: int
    clean_acc: float  # the victim's accuracy on the round's clean test images

    @property
    def all_clean_label(self) -> bool:
        return self.clean_label == self.n_poisons

    def tier(self) -> int:
        """0: fooled, clean-label, none caught; 1: fooled, clean-label, some caught; 2: the rest."""
        if self.fooled and self.all_clean_label:
            return 0 if self.caught == 0 else 1
        return 2

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """The outcome in a student's words (the leaderboard's and the CLI's)."""
        if not self.all_clean_label:
            return f"not clean-label ({self.n_poisons - self.clean_label} of {self.n_poisons} poisons look changed)"
        if not self.fooled:
            return "victim not fooled" + (f" ({self.caught} caught)" if self.caught else "")
        return "fooled, none caught" if self.caught == 0 else f"fooled, {self.caught} of {self.n_poisons} caught"


def rank_key(score: Score, submitted: float) -> tuple:
    """The leaderboard's order (``RANKING_RULE``): smaller is better."""
    return (score.tier(), score.caught if score.tier() < 2 else 0, score.level, score.n_poisons, submitted)


def round_plan(rules: RoundRules, data: Dataset, sub: Submission) -> TrialPlan:
    """The trial a submission is scored in: the round's clean set and test set (drawn from its seed,
    the same for everyone), without the submission's bases and target."""
    rng = np.random.default_rng(rules.seed)
    clean = stratified_sample(data.y_train, min(ROUND_CLEAN, len(data.y_train)), rng)
    test = stratified_sample(data.y_test, min(ROUND_TEST, len(data.y_test) - 1), rng, exclude=np.array([sub.target_index]))
    return TrialPlan(seed=(rules.seed,), target_index=sub.target_index, target_label=int(data.y_test[sub.target_index]),
                     base_class=sub.base_class, base_indices=sub.base_indices,
                     clean_indices=np.setdiff1d(clean, sub.base_indices), test_indices=test)


def score_submission(model: Classifier, data: Dataset, rules: RoundRules, sub: Submission, *,
                     judge: Judge | None = None, bank: FeatureBank | None = None) -> Score:
    """Judge, filter and retrain: the round's verdict on one (already checked) submission."""
    check_submission(rules, data, sub)
    plan = round_plan(rules, data, sub)
    imgs = sub.poisons.astype(np.float32) / 255.0
    target = data.x_test[sub.target_index:sub.target_index + 1].astype(np.float32) / 255.0
    feats = extract_features(model, np.concatenate([imgs, target])).numpy()
    poisons = Poisons(poisons=imgs, bases=data.x_train[sub.base_indices].astype(np.float32) / 255.0, target=target,
                      base_labels=np.full(len(imgs), sub.base_class, np.int64), target_label=plan.target_label,
                      traj_iters=np.array([0]), traj_features=feats[None, :-1], traj_objective=np.zeros((1, len(imgs)), np.float32),
                      target_feature=feats[-1])
    result = evaluate_poisons(model, data, plan, sub.attack, poisons, defences=(rules.defence,),
                              victim=Retraining(head=rules.victim_head, seed=rules.seed), judge=judge, bank=bank)
    v = result.victims[rules.defence]
    clean_label = int(result.verdict.clean_label.sum()) if result.verdict is not None else len(imgs)
    return Score(n_poisons=len(imgs), level=sub.level(data), clean_label=clean_label,
                 caught=len(imgs) - v.poisons_kept, fooled=bool(v.success), pred_after=int(v.outcome.pred_after),
                 clean_acc=float(v.outcome.clean_acc_after))


# --- the store --------------------------------------------------------------------------------------------

PENDING, SCORED, FAILED = "pending", "scored", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY, rules TEXT NOT NULL, opened REAL NOT NULL,
    revealed INTEGER NOT NULL DEFAULT 0, ended REAL);
CREATE TABLE IF NOT EXISTS students (
    round_id INTEGER NOT NULL REFERENCES rounds(id), nickname TEXT NOT NULL COLLATE NOCASE,
    token_sha256 TEXT NOT NULL, joined REAL NOT NULL, PRIMARY KEY (round_id, nickname));
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY, round_id INTEGER NOT NULL REFERENCES rounds(id),
    nickname TEXT NOT NULL COLLATE NOCASE, submitted REAL NOT NULL, status TEXT NOT NULL,
    attack TEXT NOT NULL, target_index INTEGER NOT NULL, base_class INTEGER NOT NULL,
    n_poisons INTEGER NOT NULL, level INTEGER NOT NULL, payload BLOB NOT NULL,
    score TEXT, message TEXT);
CREATE INDEX IF NOT EXISTS submissions_round ON submissions(round_id, nickname);
"""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SubmissionRow:
    id: int
    round_id: int
    nickname: str
    submitted: float
    status: str
    attack: str
    target_index: int
    base_class: int
    n_poisons: int
    level: int
    score: Score | None
    message: str | None


class RoundStore:
    """Rounds, students and submissions in one SQLite file (see the module's docstring)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # once: it stays with the file (readers never wait for a writer)
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self):
        """One connection per call (threads never share one), closed afterwards."""
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    # rounds
    def open_round(self, rules: RoundRules, now: float | None = None) -> Round:
        """Open a round; refused while another is still open (the teacher ends it first)."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("SELECT 1 FROM rounds WHERE ended IS NULL").fetchone():
                db.execute("ROLLBACK")
                raise RoundError("A round is already open: end it before opening another.")
            cur = db.execute("INSERT INTO rounds (rules, opened) VALUES (?, ?)",
                             (json.dumps(asdict(rules)), time.time() if now is None else now))
            db.execute("COMMIT")
        return self.round(int(cur.lastrowid))

    def round(self, round_id: int) -> Round:
        with self._connect() as db:
            row = db.execute("SELECT * FROM rounds WHERE id = ?", (round_id,)).fetchone()
        if row is None:
            raise RoundError(f"There is no round {round_id}.")
        return Round(int(row["id"]), RoundRules(**json.loads(row["rules"])), float(row["opened"]),
                     bool(row["revealed"]), row["ended"])

    def current(self) -> Round | None:
        """The open round, else the most recent one (its results stay on show), else None."""
        with self._connect() as db:
            row = db.execute("SELECT id FROM rounds ORDER BY (ended IS NULL) DESC, id DESC LIMIT 1").fetchone()
        return None if row is None else self.round(int(row["id"]))

    def reveal(self, round_id: int) -> None:
        with self._connect() as db:
            db.execute("UPDATE rounds SET revealed = 1 WHERE id = ?", (round_id,))

    def end(self, round_id: int, now: float | None = None) -> None:
        with self._connect() as db:
            db.execute("UPDATE rounds SET ended = ?, revealed = 1 WHERE id = ? AND ended IS NULL",
                       (time.time() if now is None else now, round_id))

    # students
    def join(self, round_id: int, nickname: str, now: float | None = None) -> str:
        """Take ``nickname`` in the round; returns the secret token that proves it later."""
        name = check_nickname(nickname)
        rnd = self.round(round_id)
        if rnd.ended is not None:
            raise RoundError("This round has ended.")
        token = secrets.token_urlsafe(18)
        try:
            with self._connect() as db:
                db.execute("INSERT INTO students VALUES (?, ?, ?, ?)",
                           (round_id, name, _hash(token), time.time() if now is None else now))
        except sqlite3.IntegrityError:
            raise RoundError(f"The nickname {name!r} is taken in this round: choose another.") from None
        return token

    def student(self, round_id: int, token: str | None) -> str | None:
        """The nickname ``token`` was given for in this round, or None."""
        if not token:
            return None
        with self._connect() as db:
            row = db.execute("SELECT nickname FROM students WHERE round_id = ? AND token_sha256 = ?",
                             (round_id, _hash(token))).fetchone()
        return None if row is None else str(row["nickname"])

    # submissions
    def submit(self, round_id: int, token: str, sub: Submission, data: Dataset,
               candidates: np.ndarray | None = None, now: float | None = None) -> int:
        """Store a checked submission as pending; refused (and nothing stored) when the round is not
        accepting, the token is not a student's, or the student still has one pending."""
        now = time.time() if now is None else now
        rnd = self.round(round_id)
        nickname = self.student(round_id, token)
        if nickname is None:
            raise RoundError("Choose a nickname first.")
        if not rnd.accepting(now):
            raise RoundError("This round no longer takes submissions (its time is up or the teacher ended it).")
        check_submission(rnd.rules, data, sub, candidates)
        payload = sub.to_npz()
        if len(payload) > MAX_SUBMISSION_BYTES:
            raise RoundError("The submission is too large.")
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            if db.execute("SELECT ended FROM rounds WHERE id = ?", (round_id,)).fetchone()["ended"] is not None:
                db.execute("ROLLBACK")
                raise RoundError("This round no longer takes submissions (the teacher ended it).")
            if db.execute("SELECT 1 FROM submissions WHERE round_id = ? AND nickname = ? AND status = ?",
                          (round_id, nickname, PENDING)).fetchone():
                db.execute("ROLLBACK")
                raise RoundError("Your last submission is still being scored: wait for its result, then submit again.")
            cur = db.execute(
                "INSERT INTO submissions (round_id, nickname, submitted, status, attack, target_index, base_class, "
                "n_poisons, level, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (round_id, nickname, now, PENDING, sub.attack, sub.target_index, sub.base_class,
                 len(sub.poisons), sub.level(data), payload))
            db.execute("COMMIT")
        return int(cur.lastrowid)

    def _submission_field(self, submission_id: int, column: str):
        """One column ("round_id", "payload") of a stored submission."""
        if column not in ("round_id", "payload"):  # a name in the SQL text: only these two, never user input
            raise ValueError(f"unknown column {column!r}")
        with self._connect() as db:
            row = db.execute(f"SELECT {column} FROM submissions WHERE id = ?", (submission_id,)).fetchone()
        if row is None:
            raise RoundError(f"There is no submission {submission_id}.")
        return row[column]

    def round_of(self, submission_id: int) -> Round:
        return self.round(int(self._submission_field(submission_id, "round_id")))

    def payload(self, submission_id: int) -> Submission:
        return Submission.from_npz(bytes(self._submission_field(submission_id, "payload")))

    def pending(self, round_id: int | None = None) -> list[int]:
        """Submissions still to be scored (after a restart too: the page re-queues them)."""
        q, args = "SELECT id FROM submissions WHERE status = ?", [PENDING]
        if round_id is not None:
            q, args = q + " AND round_id = ?", args + [round_id]
        with self._connect() as db:
            return [int(r["id"]) for r in db.execute(q + " ORDER BY id", args)]

    def record(self, submission_id: int, score: Score | None = None, error: str | None = None) -> None:
        """A submission's score, or why it could not be scored."""
        with self._connect() as db:
            db.execute("UPDATE submissions SET status = ?, score = ?, message = ? WHERE id = ? AND status = ?",
                       (SCORED if score is not None else FAILED,
                        json.dumps(score.to_dict()) if score is not None else None, error, submission_id, PENDING))

    def submissions(self, round_id: int, nickname: str | None = None) -> list[SubmissionRow]:
        q = ("SELECT id, round_id, nickname, submitted, status, attack, target_index, base_class, n_poisons, level, "
             "score, message FROM submissions WHERE round_id = ?")
        args: list = [round_id]
        if nickname is not None:
            q, args = q + " AND nickname = ?", args + [nickname]
        with self._connect() as db:
            rows = db.execute(q + " ORDER BY id", args).fetchall()
        return [SubmissionRow(**{**dict(r), "score": Score(**json.loads(r["score"])) if r["score"] else None})
                for r in rows]

    def leaderboard(self, round_id: int) -> list[SubmissionRow]:
        """Each student's best scored submission, best first (``rank_key``)."""
        best: dict[str, SubmissionRow] = {}
        for row in self.submissions(round_id):
            if row.score is None:
                continue
            key = row.nickname.lower()
            if key not in best or rank_key(row.score, row.submitted) < rank_key(best[key].score, best[key].submitted):
                best[key] = row
        return sorted(best.values(), key=lambda r: rank_key(r.score, r.submitted))

    def export_csv(self, round_id: int) -> str:
        """Every submission of a round with its score, one row each (the defence in every row)."""
        rnd = self.round(round_id)
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(["round", "dataset", "attacked_model", "victim", "defence", "budget_cap", "max_poisons",
                    "submission", "nickname", "submitted_utc", "status", "attack", "target_index", "base_class",
                    "n_poisons", "level", "clean_label", "caught", "fooled", "clean_acc", "message"])
        r = rnd.rules
        for s in self.submissions(round_id):
            sc = s.score
            w.writerow([rnd.id, r.dataset, r.model, r.victim_head, r.defence, r.max_level, r.max_poisons, s.id,
                        _csv_safe(s.nickname), time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.submitted)), s.status,
                        _csv_safe(s.attack), s.target_index, s.base_class, s.n_poisons, s.level,
                        "" if sc is None else sc.clean_label, "" if sc is None else sc.caught,
                        "" if sc is None else sc.fooled, "" if sc is None else f"{sc.clean_acc:.4f}",
                        _csv_safe(s.message or "")])
        return out.getvalue()


def _csv_safe(text: str) -> str:
    """No spreadsheet formula injection from a nickname or message."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def known_attack(name: str) -> str:
    """An attack's display name, or the name itself when it is not in the registry."""
    return ATTACKS[name].label if name in ATTACKS else name
