"""The showcase rule: the first clean-label success by trial number, paired with the LGM trial; never invented."""

import numpy as np

from core.gallery import Gallery, showcase


def _trial(model: str, trial: int, success: bool, clean: bool) -> dict:
    return {"key": f"{model}{trial}", "model": model, "trial": trial, "attack": "fc", "setting": "transfer",
            "n_poisons": 1, "clean_label": clean, "victims": {"none": {"success": success}}, "start": 0}


def _gallery(trials: list[dict]) -> Gallery:
    models = {"softmax": {"head": "softmax"}, "lgm": {"head": "lgm"}}
    return Gallery("mnist", [str(i) for i in range(10)], models, {}, trials, {"targets": np.zeros((len(trials), 1))})


def test_showcase_picks_first_clean_label_success_and_counts_the_cell():
    trials = [_trial("softmax", 3, True, True), _trial("softmax", 1, True, False), _trial("softmax", 2, False, True),
              _trial("softmax", 5, True, True), _trial("lgm", 3, False, True), _trial("lgm", 5, False, True)]
    sc = showcase(_gallery(trials))
    assert sc.softmax == 0 and sc.lgm == 4  # trial 3: the first success whose poisons are all clean-label
    assert (sc.successes, sc.clean_label_successes, sc.trials) == (3, 2, 4)


def test_no_showcase_without_a_clean_label_success():
    trials = [_trial("softmax", 0, True, False), _trial("softmax", 1, False, True), _trial("lgm", 0, False, True)]
    assert showcase(_gallery(trials)) is None
