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


def mcnemar_exact(a: list[bool], b: list[bool]) -> float:
    """Two-sided exact McNemar p-value for paired outcomes (the same trials under two victims):
    a binomial test of the discordant pairs, b01 of b01 + b10 at 1/2. No discordant pair: 1.0."""
    if len(a) != len(b):
        raise ValueError("paired outcomes need the same number of trials")
    b01 = sum(1 for x, y in zip(a, b) if x and not y)
    b10 = sum(1 for x, y in zip(a, b) if y and not x)
    if b01 + b10 == 0:
        return 1.0
    return float(binomtest(b01, b01 + b10, 0.5).pvalue)
