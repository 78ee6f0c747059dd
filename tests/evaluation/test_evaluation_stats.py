import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gibbon.evaluation import wilson_interval


def quadratic_roots(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson bounds as the roots in p of (p_hat - p)^2 = z^2 p (1 - p) / n, solved independently."""
    p_hat = k / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    disc = math.sqrt(b * b - 4 * a * c)
    return (-b - disc) / (2 * a), (-b + disc) / (2 * a)


@pytest.mark.parametrize("k,n", [(0, 10), (5, 10), (10, 10), (1, 3), (37, 50), (963, 1000)])
def test_matches_the_quadratic_roots(k, n):
    low, high = wilson_interval(k, n)
    ref_low, ref_high = quadratic_roots(k, n)
    assert low == pytest.approx(max(ref_low, 0.0), abs=1e-12), (low, ref_low)
    assert high == pytest.approx(min(ref_high, 1.0), abs=1e-12), (high, ref_high)


@pytest.mark.parametrize("k,n,expected", [
    (0, 10, (0.0, 0.2775)),    # published tables (Brown, Cai, DasGupta 2001; any stats package)
    (5, 10, (0.2366, 0.7634)),
    (10, 10, (0.7225, 1.0)),
])
def test_known_values(k, n, expected):
    low, high = wilson_interval(k, n)
    assert (round(low, 4), round(high, 4)) == expected


def test_empty_sample_is_uninformative():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wider_for_higher_confidence():
    low95, high95 = wilson_interval(30, 100)
    low99, high99 = wilson_interval(30, 100, z=2.576)
    assert low99 < low95 and high99 > high95


def test_rejects_impossible_counts():
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


@given(st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_contains_the_estimate(kn):
    k, n = kn
    low, high = wilson_interval(k, n)
    assert 0.0 <= low <= k / n <= high <= 1.0
