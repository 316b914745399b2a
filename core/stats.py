"""Small statistics shared by benchmarks, experiments and the dashboard."""

from __future__ import annotations

from scipy.stats import binomtest, norm


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial rate (95% at the default ``z``): honest at 0/n and n/n,
    unlike the normal one. SciPy's ``binomtest(...).proportion_ci(method="wilson")``; no trials
    at all say nothing, (0, 1)."""
    if trials <= 0:
        return 0.0, 1.0
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=2 * norm.cdf(z) - 1, method="wilson")
    return float(ci.low), float(ci.high)
