import pytest

from core.stats import wilson_interval


@pytest.mark.parametrize("k, n, low, high", [
    (8, 10, 0.4902, 0.9433),
    (0, 20, 0.0, 0.1611),
    (0, 100, 0.0, 0.0370),
    (50, 100, 0.4038, 0.5962),
    (100, 100, 0.9630, 1.0),
    (1, 1000, 0.000177, 0.005643),
])
def test_wilson_matches_reference_values(k, n, low, high):
    # reference: the Wilson score interval without continuity correction, z = 1.96
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)
    assert isinstance(lo, float) and isinstance(hi, float) and 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_no_trials_says_nothing():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_mcnemar_exact_is_the_binomial_test_of_discordant_pairs():
    from scipy.stats import binomtest

    from core.stats import mcnemar_exact

    # the shipped Fashion-MNIST cell: softmax 4 of 12 flipped, LGM 0 of 12, every flip discordant
    assert mcnemar_exact([True] * 4 + [False] * 8, [False] * 12) == pytest.approx(0.125)
    assert mcnemar_exact([True] * 8 + [False] * 17, [False] * 25) == pytest.approx(2 * 0.5 ** 8)  # CIFAR d=128
    a = [True, True, False, True, False, True, False, False]
    b = [False, True, True, False, False, False, False, True]
    b01, b10 = 3, 2
    assert mcnemar_exact(a, b) == pytest.approx(binomtest(b01, b01 + b10, 0.5).pvalue)
    assert mcnemar_exact([True, False], [True, False]) == 1.0  # concordant only: no evidence
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def test_paired_outcomes_match_trials_and_give_mcnemars_p():
    """Two victims compared on the trials both ran: successes, discordant pairs, exact McNemar."""
    from scipy.stats import binomtest

    from core.report import outcomes, paired

    records = []
    for t in range(12):
        soft = t < 9  # softmax victim fooled in trials 0-8
        lgm = t in (0, 11)  # LGM victim fooled in trials 0 and 11
        records.append({"model": "softmax", "attack": "bp", "n_poisons": 25, "setting": "transfer", "trial": t,
                        "victim_name": "linear", "defences": {"none": {"success": soft}},
                        "victims": {"ncm": {"none": {"success": False}}}})
        records.append({"model": "lgm", "attack": "bp", "n_poisons": 25, "setting": "transfer", "trial": t,
                        "victim_name": "linear", "defences": {"none": {"success": lgm}}})
    records.append({"model": "lgm", "attack": "bp", "n_poisons": 25, "setting": "transfer", "trial": 99,
                    "victim_name": "linear", "defences": {"none": {"success": True}}})  # no softmax partner
    res = paired(outcomes(records, "softmax"), outcomes(records, "lgm"))
    assert (res["pairs"], res["left"], res["right"], res["only_left"], res["only_right"]) == (12, 9, 2, 8, 1)
    assert res["p"] == pytest.approx(binomtest(8, 9, 0.5).pvalue)
    assert paired(outcomes(records, "softmax", "ncm"), outcomes(records, "lgm"))["left"] == 0
    assert paired(outcomes(records, "softmax"), outcomes(records, "lgm"), attack="cp")["pairs"] == 0
