"""Teacher: open a red-team round (data set, victim, hidden filter, limits), watch it, reveal the
filter, end it, export the submissions as CSV. Protected by the passphrase the server was started
with (``POISONLAB_TEACHER_PASSPHRASE``)."""

import time

import streamlit as st

from core.attacks import budget_levels, default_eps
from core.defences import DEFENCES, applies
from core.lab import LAB_MAX_POISONS
from core.defences import label as defence_label
from core.rounds import RoundError, RoundRules, passphrase_ok, teacher_passphrase
from core.victim import VICTIM_HEADS
from pages.common import DATASET_NAMES, demo, model, sidebar
from pages.rounds_ui import rules_lines, schedule_scoring, show_leaderboard, store, victim_label

dataset, space, pair = sidebar()
st.title("Teacher")

if teacher_passphrase() is None:
    st.info("The teacher's controls are off: start the server with a passphrase, e.g. "
            "`POISONLAB_TEACHER_PASSPHRASE='pick-one' streamlit run app.py`, then sign in here with it.")
    st.stop()
if not st.session_state.get("teacher"):
    with st.form("sign_in"):
        given = st.text_input("Teacher's passphrase", type="password")
        if st.form_submit_button("Sign in"):
            if passphrase_ok(given):
                st.session_state["teacher"] = True
                st.rerun()
            time.sleep(1.0)  # slows guessing down; the page stays as it was
            st.error("Wrong passphrase.")
    st.stop()

s = store()
rnd = s.current()
if rnd is None or rnd.ended is not None:
    st.subheader("Open a round")
    st.markdown(f"The round uses the sidebar's data set and feature space: **{DATASET_NAMES[dataset]}, {space}**.")
    with st.form("open_round"):
        c1, c2, c3 = st.columns(3)
        heads = list(pair)
        attacked = c1.selectbox("Attacked model", heads, index=heads.index("lgm") if "lgm" in heads else 0,
                                format_func=lambda h: "LGM" if h == "lgm" else "softmax")
        victim = c2.selectbox("Victim retrained with", list(VICTIM_HEADS), format_func=victim_label,
                              help="; ".join(f"{v.label}: {v.summary}" for v in VICTIM_HEADS.values()))
        filters = ["none", *DEFENCES]
        defence = c3.selectbox("Hidden filter", filters, index=filters.index("lgm"), format_func=defence_label,
                               help="Students do not see it until you reveal it. It must apply to the attacked "
                                    "model (the LGM likelihood needs the LGM model).")
        c4, c5, c6 = st.columns(3)
        level = c4.slider("Pixel budget (of 255)", 1, 255, budget_levels(default_eps(dataset)),
                          help="The largest change of any pixel a submission may have; the default is this "
                               "data set's clean-label budget.")
        n_max = c5.slider("Most poisons per submission", 1, LAB_MAX_POISONS, 5)
        minutes = c6.number_input("Minutes", 1, 240, 15)
        if st.form_submit_button("Open the round", type="primary"):
            head_type = model(pair[attacked])[0].config.head
            try:
                if not applies(defence, head_type):
                    raise RoundError(f"The {defence_label(defence)} filter does not apply to the {attacked} model: "
                                     "choose another filter or model.")
                rnd = s.open_round(RoundRules(dataset=dataset, space=space, model=attacked, model_path=pair[attacked],
                                              head_type=head_type, victim_head=victim, defence=defence,
                                              max_level=int(level), max_poisons=int(n_max), minutes=float(minutes)))
            except RoundError as exc:
                st.error(str(exc))
            else:
                st.success(f"Round {rnd.id} is open. Students join on the Red-team round page.")
                st.rerun()

if rnd is not None:
    state = "ended" if rnd.ended is not None else ("open" if rnd.accepting() else "time is up")
    st.subheader(f"Round {rnd.id}: {state}")
    st.markdown("  \n".join(rules_lines(rnd, show_defence=True)))
    c1, c2, c3 = st.columns(3)
    if rnd.ended is None and not rnd.revealed and c1.button("Reveal the hidden filter"):
        s.reveal(rnd.id)
        st.rerun()
    if rnd.ended is None and c2.button("End the round"):
        s.end(rnd.id)
        st.rerun()
    c3.download_button("Export submissions (CSV)", lambda: s.export_csv(rnd.id), file_name=f"round_{rnd.id}.csv",
                       mime="text/csv")

    @st.fragment(run_every=2.0)
    def live() -> None:
        """Counts and the leaderboard, refreshed every 2 s as students submit and scores come in."""
        now = s.round(rnd.id)
        if now.accepting() != rnd.accepting() or now.ended != rnd.ended or now.revealed != rnd.revealed:
            st.rerun(scope="app")  # time ran out or another tab ended or revealed it: the header and buttons too
        subs = s.submissions(now.id)
        pending = schedule_scoring(now)
        st.markdown(f"{len(subs)} submission(s) from {len({x.nickname.lower() for x in subs})} student(s); "
                    f"{pending} being scored; {now.seconds_left() / 60:.0f} min left.")
        show_leaderboard(now, demo(now.rules.dataset).classes)

    live()
