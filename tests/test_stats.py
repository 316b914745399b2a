import pytest

from core.stats import wilson_interval


def test_wilson_matches_reference_values():
    # reference: 8 of 10 -> (0.4902, 0.9433); 0 of 20 -> (0, 0.1611)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
