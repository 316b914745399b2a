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
