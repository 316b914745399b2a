"""Red-team round, the student's side: join with a nickname, submit poisons from the Poison lab,
see your own results and the class's leaderboard (rounds: ``core.rounds``; scoring: the queue)."""

import streamlit as st

from core.defences import label as defence_label
from core.rounds import RoundError, Submission, check_submission, known_attack
from pages.common import DATASET_NAMES, demo, named, sidebar, targets
from pages.plots import image_for_display, show_image
from pages.rounds_ui import rules_lines, schedule_scoring, show_leaderboard, store, submission_of

dataset, space, pair = sidebar()
st.title("Red-team round")
st.markdown("The whole class attacks **one victim** whose filter is kept secret. Craft poisons in the "
            "**Poison lab**, submit them here, and see whether they fooled the victim without being caught.")

s = store()
rnd = s.current()
if rnd is None:
    st.info("No round has been opened yet. The teacher opens one on the Teacher page.")
    st.stop()
r = rnd.rules
ds = demo(r.dataset)
open_now = rnd.accepting()
if rnd.ended is not None:
    st.warning(f"Round {rnd.id} has ended. Its results are below.")
elif not open_now:
    st.warning(f"Round {rnd.id}: time is up. The teacher will reveal the filter and end the round.")
else:
    st.success(f"Round {rnd.id} is open: {rnd.seconds_left() / 60:.0f} min left.")
st.markdown("  \n".join(rules_lines(rnd, show_defence=False)))  # the reveal is drawn live, below
if (r.dataset, r.space) != (dataset, space):
    st.warning(f"This round is on **{DATASET_NAMES.get(r.dataset, r.dataset)}, {r.space} features**: switch the "
               "sidebar to it before crafting in the Poison lab.")

# --- who you are ---------------------------------------------------------------------------------------------
tokens = st.session_state.setdefault("round_tokens", {})  # this browser session's only (never in the URL)
token = tokens.get(rnd.id)
me = s.student(rnd.id, token)
if me is None and open_now:
    with st.form("join"):
        nick = st.text_input("Your nickname for this round", max_chars=20,
                             help="2-20 letters, digits, spaces, _ . - ; the leaderboard shows it.")
        if st.form_submit_button("Join the round"):
            try:
                tokens[rnd.id] = s.join(rnd.id, nick)
                st.rerun()
            except RoundError as exc:
                st.error(str(exc))
elif me is not None:
    st.markdown(f"You are **{me}**.")

# --- submit ----------------------------------------------------------------------------------------------------
if me is not None and open_now:
    st.subheader("Submit poisons")
    sub, why = submission_of(rnd, st.session_state.get("lab"))
    upload = st.file_uploader("...or upload a poisons .npz downloaded from the Poison lab", type=["npz"],
                              key=f"round_upload_{rnd.id}")
    if upload is not None:
        try:
            sub, why = Submission.from_npz(upload.getvalue()), None
            st.caption("The uploaded file is what will be submitted.")
        except RoundError as exc:
            sub, why = None, str(exc)
    if sub is not None:
        try:  # the rules and the data first: nothing below reads an unchecked index
            check_submission(r, ds, sub, targets(r.dataset, r.space))
        except RoundError as exc:
            sub, why = None, f"This submission breaks the round's rules: {exc}"
    if sub is None:
        st.info(why)
    else:
        st.markdown(f"{len(sub.poisons)} poison(s) by {known_attack(sub.attack)}, made from "
                    f"{named(ds.classes[sub.base_class])}; target: test image {sub.target_index} "
                    f"({named(ds.classes[int(ds.y_test[sub.target_index])]) if 0 <= sub.target_index < len(ds.y_test) else '?'}).")
        if st.button("Submit to the round", type="primary"):
            try:
                sid = s.submit(rnd.id, token, sub, ds, candidates=targets(r.dataset, r.space))
            except RoundError as exc:
                st.error(f"Not submitted: {exc}")
            else:
                st.success(f"Submitted (number {sid}): it is being judged, filtered and retrained.")

@st.fragment(run_every=2.0)
def live() -> None:
    """Your submissions and the leaderboard, refreshed every 2 s without rerunning the page (the
    round is read again each time: the teacher's reveal shows up here)."""
    rnd = s.round(round_id)
    latest = s.current()
    if latest is None or latest.id != round_id or rnd.accepting() != open_now:
        st.rerun(scope="app")  # the teacher ended this round, its time ran out, or a new one opened
    pending = schedule_scoring(rnd)
    mine = s.submissions(rnd.id, me) if me is not None else []
    if mine:
        st.subheader("Your submissions")
        st.dataframe([{"number": m.id, "attack": known_attack(m.attack), "poisons": m.n_poisons,
                       "largest pixel change": m.level,
                       "result": m.score.describe() if m.score else ("being scored..." if m.status == "pending"
                                                                     else m.message)} for m in mine],
                     hide_index=True, width="stretch")
        last = mine[-1]
        shown = s.payload(last.id)
        cols = st.columns(min(2 * len(shown.poisons), 10))
        for i, (b, p) in enumerate(zip(shown.base_indices[:5], shown.poisons[:5])):
            show_image(cols[2 * i], image_for_display(ds.x_train[b]), width=80, caption="base")
            show_image(cols[2 * i + 1], image_for_display(p), width=80, caption="your poison")
    show_leaderboard(rnd, ds.classes)
    if rnd.revealed:
        st.markdown(f"**The hidden filter was: {defence_label(r.defence)}.**")
        best = store().leaderboard(rnd.id)[:3]
        for row in best:
            shown = store().payload(row.id)
            st.markdown(f"**{row.nickname}**: {row.score.describe()}")
            cols = st.columns(10)
            for i, (b, p) in enumerate(zip(shown.base_indices[:5], shown.poisons[:5])):
                show_image(cols[2 * i], image_for_display(ds.x_train[b]), width=70, caption="base")
                show_image(cols[2 * i + 1], image_for_display(p), width=70, caption="poison")


    if pending:
        st.caption(f"{pending} submission(s) of the class waiting to be scored.")


round_id = rnd.id
live()
