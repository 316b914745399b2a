"""Fill the caches every browser shares as soon as the server starts, so that the first visit to any
page after a data-set switch does not wait for models, features, maps, targets, the judge, the
galleries or the Overview's fallback poison (measured before: CIFAR-10 Overview 6.5 s, Fashion-MNIST
Poison lab 7.2 s on a first visit).

One thread per server (``start``: a cached resource), not a daemon (a daemon thread killed while
running torch at interpreter exit aborted the process). It calls the same cached functions the pages
call, so what it fills is exactly what they read; a page that needs an entry first simply computes it
(Streamlit's caches compute each key once).
"""

from __future__ import annotations

import os
import threading
import time

import streamlit as st

from pages.common import (HEADS, bank, demo, example, experiments_for, features, judge, model, projection, shipped,
                          shipped_results, targets)


def warm_all(progress: list[str] | None = None) -> list[str]:
    """Load everything the pages share, data set by data set (MNIST first: the classroom default);
    returns what it did with the seconds each took (also appended to ``progress`` as it goes)."""
    from pages.plots import _likelihood_grid
    from pages.showcase import pick_showcase

    done = progress if progress is not None else []

    def step(what: str, fn, *args) -> None:
        t0 = time.perf_counter()
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - one failing entry must not skip the rest; its page shows the error
            done.append(f"{what} failed: {type(exc).__name__}: {exc}")
            return
        done.append(f"{what} {time.perf_counter() - t0:.2f} s")

    step("shipped results", shipped_results)
    step("one-step lab press (the crafts' first-use imports)", _one_step_press)
    for dataset, spaces in shipped().items():
        step(f"{dataset} sample", demo, dataset)
        step(f"{dataset} judge", judge, dataset)
        step(f"{dataset} experiments", experiments_for, dataset)
        for space, pair in spaces.items():
            for head in HEADS:
                path = pair[head]
                step(f"{dataset} {space} {head} model", model, path)
                for split in ("test", "train"):
                    step(f"{dataset} {space} {head} {split} features", features, path, split)
                step(f"{dataset} {space} {head} bank", bank, path)
                step(f"{dataset} {space} {head} map", projection, path, "raw" if space == "2-D" else "pca")
                if space == "2-D" and head == "lgm":
                    step(f"{dataset} {space} likelihood map", _likelihood_grid, path, "raw")
            step(f"{dataset} {space} targets", targets, dataset, space)
            t0 = time.perf_counter()
            shown = pick_showcase(dataset, space)
            done.append(f"{dataset} {space} showcase {time.perf_counter() - t0:.2f} s")
            if shown is None:  # the Overview crafts one poison per model instead
                for head in HEADS:
                    step(f"{dataset} {space} {head} example poison", example, pair[head], dataset)
    return done


@st.cache_resource(show_spinner=False)
def _one_step_press() -> bool:
    """Once per server, the lab's pipeline with one crafting step on the MNIST 2-D pair: torch
    imports parts of itself the first time a craft and a retraining run (about 4 s measured), which
    would otherwise land on the first student who presses the button."""
    from core.lab import LAB_CLEAN, LAB_TEST, lab_runs, run_lab_pair
    from core.pipeline import plan_trial

    pair, data = shipped()["mnist"]["2-D"], demo("mnist")
    target = int(targets("mnist", "2-D")[0])
    base = (int(data.y_test[target]) + 1) % len(data.classes)
    plan = plan_trial(data, 0, targets("mnist", "2-D"), n_poisons=1, n_clean=LAB_CLEAN, n_test=LAB_TEST,
                      judge=judge("mnist"), target_index=target, base_class=base)
    runs = lab_runs({h: model(pair[h])[0] for h in HEADS}, "fc", "mnist", trial_seed=0, n_poisons=1, iters=1,
                    record_every=1)
    run_lab_pair(runs, data, plan, judge=judge("mnist"), banks={h: bank(pair[h]) for h in HEADS})
    return True


STATE: dict = {}  # the running warm-up's {"log", "error", "done_s"}, for a benchmark or a test to watch


@st.cache_resource(show_spinner=False)
def start() -> dict:
    """Start the warm-up once per server (Streamlit runs app.py first for the first visitor, who
    starts it); {"thread", "log", "error", "done_s"} (the log fills as it goes)."""
    state = STATE
    state.update(log=[], error=None, done_s=None)
    t0 = time.perf_counter()

    def run() -> None:
        try:  # behind the first visitors' page runs (Linux: per-thread nice)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        try:
            warm_all(state["log"])
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only means pages fill their caches themselves
            state["error"] = f"{type(exc).__name__}: {exc}"
        state["done_s"] = round(time.perf_counter() - t0, 2)

    state["thread"] = threading.Thread(target=run, name="poisonlab-warm-up")
    state["thread"].start()
    return state
