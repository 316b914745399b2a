"""What the Red-team and Teacher pages share: the server's round store, the scoring of submissions
through the work queue, the leaderboard's table (the rounds themselves are ``core.rounds``)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.defences import label as defence_label
from core.rounds import RANKING_RULE, RoundError, RoundStore, Submission, score_submission
from core.victim import VICTIM_HEADS
from pages.common import DATASET_NAMES, bank, demo, judge, model
from pages.jobs_ui import job_queue

SCORING = "submission:"  # the queue owner of a submission's scoring job (not a browser session)


@st.cache_resource(show_spinner=False)
def store() -> RoundStore:
    """The server's one round store (``POISONLAB_ROUNDS_DB``); every browser reads the same file."""
    return RoundStore()


def _score(submission_id: int) -> None:
    """The queued job: judge, filter, retrain; the result (or why it failed) goes to the store."""
    s = store()
    if submission_id not in s.pending():  # scored meanwhile (queued twice between two polls)
        return
    try:
        sub = s.payload(submission_id)
        rules = s.round_of(submission_id).rules
        score = score_submission(model(rules.model_path)[0], demo(rules.dataset), rules, sub,
                                 judge=judge(rules.dataset), bank=bank(rules.model_path))
    except Exception as exc:  # noqa: BLE001 - the student sees why; the queue carries on
        s.record(submission_id, error=f"could not be scored: {exc}")
        raise
    s.record(submission_id, score)


def schedule_scoring(rnd) -> int:
    """Queue every pending submission not queued yet, of any round (after a server restart too: the
    queue allows one job per owner, so calling this on every page run queues each once). Returns
    how many of ``rnd``'s are pending."""
    q, s = job_queue(), store()
    for sid in s.pending():
        q.submit(f"{SCORING}{sid}", "scoring", lambda job, sid=sid: _score(sid))
    return len(s.pending(rnd.id))


def victim_label(head: str) -> str:
    return VICTIM_HEADS[head].label


def rules_lines(rnd, show_defence: bool) -> list[str]:
    """The round's rules as a student reads them."""
    r = rnd.rules
    return [f"**Data set:** {DATASET_NAMES.get(r.dataset, r.dataset)}, {r.space} features",
            f"**Attacked model:** the {'LGM' if r.model == 'lgm' else 'softmax'} model; its victim is retrained "
            f"with a {victim_label(r.victim_head)}",
            f"**Hidden filter:** {defence_label(r.defence) if show_defence else 'revealed at the end (below, when the teacher reveals it)'}",
            f"**Limits:** at most {r.max_poisons} poisons, pixels changed by at most {r.max_level} of 255"]


def leaderboard_rows(rnd, classes: tuple[str, ...]) -> list[dict]:
    """One row per student, best first (``core.rounds.RANKING_RULE``)."""
    rows = []
    for place, row in enumerate(store().leaderboard(rnd.id), 1):
        sc = row.score
        rows.append({"place": place, "nickname": row.nickname, "result": sc.describe(),
                     "target now called": classes[sc.pred_after] if 0 <= sc.pred_after < len(classes) else "?",
                     "largest pixel change (of 255)": sc.level, "poisons": sc.n_poisons,
                     "victim's clean accuracy": f"{100 * sc.clean_acc:.1f}%"})
    return rows


def submission_of(rnd, lab: dict | None) -> tuple[Submission | None, str | None]:
    """The poisons of this session's last Poison lab run against the round's model, or why not."""
    if not lab:
        return None, "Craft poisons in the Poison lab first (or upload its .npz download below)."
    r = rnd.rules
    if lab["key"][:2] != (r.dataset, r.space):
        return None, (f"Your last Poison lab run was on another data set or feature space; this round is on "
                      f"{DATASET_NAMES.get(r.dataset, r.dataset)}, {r.space}.")
    result = lab["results"].get(r.model)
    if result is None:
        return None, "Your last Poison lab run has no poisons against the round's model."
    try:
        return Submission.from_lab(result.plan, result.poisons, result.attack), None
    except RoundError as exc:
        return None, str(exc)


def show_leaderboard(rnd, classes: tuple[str, ...]) -> None:
    """The leaderboard as a plain table (readable on a projector) and the rule that orders it."""
    st.subheader("Leaderboard")
    rows = leaderboard_rows(rnd, classes)
    if rows:
        st.table(pd.DataFrame(rows), hide_index=True)
    else:
        st.info("No scored submission yet.")
    st.caption(RANKING_RULE)

