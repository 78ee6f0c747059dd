"""Confidence intervals for accuracies measured on a finite test set.

An accuracy of 62% on 500 samples is a measurement, not a fact: the Wilson score interval says
how far the true accuracy on the distribution could plausibly be. It behaves well at 0% and
100% (where the normal "Wald" interval collapses to a point), which is exactly where robust
accuracies of broken defenses live.

References:
    Wilson (1927), "Probable inference, the law of succession, and statistical inference",
    JASA 22(158).
    Brown, Cai, DasGupta (2001), "Interval Estimation for a Binomial Proportion",
    Statistical Science 16(2) (why Wilson rather than Wald).
"""

from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    ``center = (p + z^2 / 2n) / (1 + z^2 / n)`` and
    ``half = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)``, clipped to ``[0, 1]``.

    Args:
        successes: number of successes (e.g. robust samples), ``0 <= successes <= n``.
        n: number of trials (samples). ``n == 0`` gives the uninformative ``(0.0, 1.0)``.
        z: standard-normal quantile; 1.96 for a two-sided 95% interval.

    Returns:
        ``(low, high)`` as fractions in ``[0, 1]``.

    Example:
        >>> tuple(round(v, 4) for v in wilson_interval(5, 10))
        (0.2366, 0.7634)
        >>> wilson_interval(0, 0)
        (0.0, 1.0)
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return (low, high)
