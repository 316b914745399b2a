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


def test_showcase_prefers_a_contrast_with_the_lgm_victim():
    """Trial 3 poisoned both victims; trial 5 poisoned the softmax victim only: trial 5 is shown."""
    trials = [_trial("softmax", 3, True, True), _trial("softmax", 5, True, True),
              _trial("lgm", 3, True, True), _trial("lgm", 5, False, True)]
    sc = showcase(_gallery(trials))
    assert (sc.softmax, sc.lgm, sc.contrast) == (1, 3, True)
    no_contrast = showcase(_gallery(trials[:3]))
    assert (no_contrast.softmax, no_contrast.contrast) == (0, False) and sc.strength() > no_contrast.strength()


def test_no_showcase_without_a_clean_label_success():
    trials = [_trial("softmax", 0, True, False), _trial("softmax", 1, False, True), _trial("lgm", 0, False, True)]
    assert showcase(_gallery(trials)) is None


def test_contact_sheet_and_npz_keep_every_pixel():
    import io

    from PIL import Image

    from core.export import contact_sheet, poisons_npz

    rng = np.random.default_rng(0)
    bases = rng.integers(0, 256, (3, 28, 28, 1), dtype=np.uint8)
    poisons = np.clip(bases.astype(int) + rng.integers(-25, 26, bases.shape), 0, 255).astype(np.uint8)
    target = rng.integers(0, 256, (28, 28, 1), dtype=np.uint8)
    sheet = np.asarray(Image.open(io.BytesIO(contact_sheet(target, bases, poisons, cell=56))))
    assert sheet.shape == (18 + 3 * 62 + 6, 4 * 62 + 6, 3)
    tile = sheet[18 + 6 + 62: 18 + 6 + 62 + 56, 6 + 62: 6 + 62 + 56, 0]  # row 2, the poison column
    assert np.array_equal(tile[::2, ::2], poisons[1, ..., 0])  # nearest-neighbour x2: every pixel as it is
    z = np.load(io.BytesIO(poisons_npz(target, bases, poisons, target_label=3, eps=0.1)), allow_pickle=False)
    assert np.array_equal(z["poisons"], poisons) and np.array_equal(z["target"], target) and int(z["target_label"]) == 3
