"""Privacy auditing: the Clopper-Pearson lower bound is right, never inflated by the threshold
search, zero on noise, and an audit of real training separates private from non-private runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import binom

from gibbon import data
from gibbon.core.checks import GibbonInputError
from gibbon.privacy.audit import (audit_dp_sgd, audit_statistics, canary_input, epsilon_lower_bound,
                                  max_epsilon_lower_bound)

DELTA = 1e-5


def _cp_upper_by_binomial(k, n, level):
    """The upper limit straight from its definition: the p at which seeing <= k of n has chance 1 - level."""
    return brentq(lambda p: binom.cdf(k, n, p) - (1 - level), 1e-12, 1 - 1e-12, xtol=1e-14)


@pytest.fixture(scope="module")
def digits():
    # 299 images (300 with the canary: train_dp's sampling rate is the same with and without it); delta 1e-5 < 1/300
    return data.load("digits", "train", n=299)


def test_bound_matches_hand_computed_binomial_limits():
    level = math.sqrt(0.95)  # each side at sqrt(confidence): both hold at once with probability 0.95
    p = _cp_upper_by_binomial(0, 100, level)
    assert abs(p - (1 - (1 - level) ** (1 / 100))) < 1e-10  # zero successes: closed form
    expected = math.log((1 - DELTA - p) / p)  # = 3.2849
    got = epsilon_lower_bound(0, 0, 100, 100, DELTA, 0.95)
    assert abs(got.epsilon - expected) < 1e-8 and abs(expected - 3.2849) < 1e-4, (got, expected)
    # an asymmetric case: 3 false positives of 200, 40 false negatives of 150
    fpr, fnr = _cp_upper_by_binomial(3, 200, level), _cp_upper_by_binomial(40, 150, level)
    expected = max(math.log((1 - DELTA - fpr) / fnr), math.log((1 - DELTA - fnr) / fpr))
    got = epsilon_lower_bound(3, 40, 200, 150, DELTA, 0.95)
    assert abs(got.fpr_upper - fpr) < 1e-9 and abs(got.fnr_upper - fnr) < 1e-9
    assert abs(got.epsilon - expected) < 1e-8, (got, expected)
    # a useless test (errors at chance) proves nothing
    assert epsilon_lower_bound(50, 50, 100, 100, DELTA).epsilon == 0.0


def test_a_perfect_separator_is_limited_by_the_trial_count():
    out, inn = -np.arange(20.0) - 1, 1e6 + np.arange(20.0)
    bound = audit_statistics(out, inn, DELTA)
    ceiling = max_epsilon_lower_bound(10, 10, DELTA)  # the threshold search spends half of the 20 + 20 trials
    assert bound.selection == "held-out half" and (bound.fp, bound.fn, bound.n_out, bound.n_in) == (0, 0, 10, 10)
    assert math.isfinite(bound.epsilon) and abs(bound.epsilon - ceiling) < 1e-12, (bound, ceiling)
    assert 0.5 < ceiling < 1.0, ceiling  # 10 + 10 clean trials are worth 0.81, however wide the gap
    assert max_epsilon_lower_bound(5, 5, DELTA) == 0.0  # and 5 + 5 prove nothing at 95%
    assert -1 < bound.threshold < 1e6
    # a threshold fixed in advance uses all 40 trials
    assert abs(audit_statistics(out, inn, DELTA, threshold=0.0).epsilon - max_epsilon_lower_bound(20, 20, DELTA)) < 1e-12


def test_random_statistics_give_no_bound_but_a_naive_one_would():
    rng = np.random.default_rng(0)
    draws, positive, naive_positive = 300, 0, 0
    for _ in range(draws):
        out, inn = rng.normal(size=40), rng.normal(size=40)
        positive += audit_statistics(out, inn, DELTA).epsilon > 0
        # the broken audit: best threshold picked on the same trials, point estimates instead of confidence limits
        t = np.sort(np.r_[out, inn])
        fpr = np.clip([(out >= s).mean() for s in t], 1 / 40, 1)
        fnr = np.clip([(inn < s).mean() for s in t], 1 / 40, 1)
        naive_positive += np.max(np.log(np.maximum(1 - fpr, 1e-12) / fnr)) > 0
    # the bound holds with probability 0.95, and noise has epsilon 0: at most ~5% positive (plus sampling slack)
    assert positive / draws <= 0.08, (positive, draws)
    assert naive_positive / draws > 0.9, (naive_positive, draws)  # so the check above can fail


def test_bad_input_is_refused_with_a_fix():
    with pytest.raises(GibbonInputError, match="at least 2 trials"):
        audit_statistics([0.0], [1.0, 2.0], DELTA)
    with pytest.raises(GibbonInputError, match="confidence"):
        epsilon_lower_bound(0, 0, 10, 10, DELTA, confidence=1.0)
    with pytest.raises(GibbonInputError, match="delta"):
        epsilon_lower_bound(0, 0, 10, 10, 0.0)
    with pytest.raises(GibbonInputError, match="NaN"):
        audit_statistics([0.0, float("nan")], [1.0, 2.0], DELTA)
    with pytest.raises(GibbonInputError, match="whole count"):
        epsilon_lower_bound(11, 0, 10, 10, DELTA)
    train = data.load("digits", "train", n=300)
    with pytest.raises(GibbonInputError, match="trials"):
        audit_dp_sgd(train, trials=1, progress=False)
    with pytest.raises(GibbonInputError, match="multiple of batch_size"):
        audit_dp_sgd(train, trials=2, batch_size=100, progress=False)


def test_the_dead_pixel_canary_lights_only_unused_pixels(digits):
    x = canary_input(digits, "dead-pixels")
    assert x.shape == digits.x.shape[1:] and set(x.unique().tolist()) <= {0.0, 1.0}
    on = x > 0
    assert 5 <= int(on.sum()) <= 20, int(on.sum())
    assert float(digits.x[:, on].mean()) < 0.01  # the data barely touch these weights


def test_non_private_training_is_caught(digits):
    # full batch (rate 1), 10 steps, no clipping or noise: every in-run memorises the canary
    result = audit_dp_sgd(digits, epsilon=math.inf, trials=50, epochs=10, batch_size=300, progress=False)
    assert result.accountant_epsilon == math.inf
    assert result.bound.epsilon > 1.5, result.summary()  # measured 1.84 (= the ceiling of 25 + 25 held-out runs)
    assert result.bound.epsilon <= result.max_possible + 1e-12


def test_dp_training_stays_below_the_accountant(digits, tmp_path):
    result = audit_dp_sgd(digits, epsilon=1.0, trials=50, epochs=10, batch_size=300, out_dir=tmp_path,
                          save_every=10, progress=False)
    assert abs(result.accountant_epsilon - 1.0) < 0.01, result.accountant_epsilon
    assert result.bound.epsilon <= result.accountant_epsilon, result.summary()  # measured 0.0
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert saved["bound"]["epsilon"] == result.bound.epsilon and len(saved["scores_in"]) == 50


def test_a_killed_audit_resumes_where_it_stopped(digits, tmp_path):
    settings = dict(epsilon=4.0, trials=6, epochs=2, batch_size=300, save_every=2, progress=False)
    whole = audit_dp_sgd(digits, **settings)
    audit_dp_sgd(digits, out_dir=tmp_path, **settings)
    state_path = tmp_path / "audit_state.json"
    state = json.loads(state_path.read_text())
    # as if killed after 5 runs (out, in, out, in, out) with the last save at 4
    state["scores"] = {"out": state["scores"]["out"][:2], "in": state["scores"]["in"][:2]}
    state["seconds"] = state["seconds"][:4]
    state_path.write_text(json.dumps(state))
    resumed = audit_dp_sgd(digits, out_dir=tmp_path, **settings)
    assert resumed.scores_out == whole.scores_out and resumed.scores_in == whole.scores_in
    with pytest.raises(GibbonInputError, match="other settings"):
        audit_dp_sgd(digits, out_dir=tmp_path, **(settings | {"epsilon": 2.0}))


@pytest.mark.slow
def test_a_weakly_private_run_is_caught_but_not_beyond_its_accountant(digits):
    # epsilon 8 full batch: noise 2.02 over 10 steps; with 400 + 400 runs the black-box audit finds a real leak
    result = audit_dp_sgd(digits, epsilon=8.0, trials=400, epochs=10, batch_size=300, progress=False)
    assert 0.5 < result.bound.epsilon <= result.accountant_epsilon, result.summary()  # measured 1.80
