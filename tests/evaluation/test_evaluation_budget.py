"""``evaluate`` against a black box with a shared query budget (``Oracle(max_total=...)``, a remote
API's): the budget is split fairly over units and batches, one query per sample is kept to check
each result, nothing goes over it, and the report says where the budget cut an attack short.

A run that let the first batch spend everything fails the every-batch check; one that ignored
the budget raises from the oracle; a no-op attack fails the robust-accuracy checks.
"""

from __future__ import annotations

import pytest

from gibbon.core.checks import GibbonInputError
from gibbon.evaluation import evaluate
from gibbon.oracles import EstimatedGradient, Oracle

STEP = 2 + 2 * 10  # queries a row of one estimated step costs with 20 samples


def _budget_warnings(report):
    return [w for w in report.warnings if "shared query budget" in w]


def test_estimated_pgd_shares_the_budget_over_every_batch_and_stops_before_it(linear_digits):
    model, data = linear_digits
    x, y = data.x[:120], data.y[:120]
    total = 120 + 20 + 120 * STEP * 8  # clean predictions, model checks, ~8 estimated steps a sample
    oracle = Oracle(model, max_total=total)
    report = evaluate(EstimatedGradient(oracle, samples=20), (x, y), ["pgd:steps=20,step_size=0.025"], [0.1],
                      batch_size=40, progress=False)
    assert oracle.total <= total
    robust = report.per_sample[0, 0]
    clean = report.clean_accuracy
    # measured: clean 0.967 -> 0.658 with the budget (0.408 without), robust 28 / 23 / 28 of the
    # three batches of 40; a no-op keeps 0.967, a first batch spending it all leaves 38-39 robust after
    assert report.robust_accuracy("pgd", 0.1) <= clean - 0.2, report.table()
    for start in (0, 40, 80):  # the first batch did not take it all: each one was attacked
        assert int(robust[start:start + 40].sum()) <= 32, robust.tolist()
    (warning,) = _budget_warnings(report)
    assert "attacked short of the full schedule" in warning and "upper bound" in warning


def test_two_units_both_get_their_share(linear_digits):
    model, data = linear_digits
    x, y = data.x[:80], data.y[:80]
    total = 80 + 20 + 2 * 80 * STEP * 8
    oracle = Oracle(model, max_total=total)
    report = evaluate(EstimatedGradient(oracle, samples=20), (x, y), ["pgd:steps=20,step_size=0.025"], [0.1, 0.2],
                      batch_size=40, progress=False)
    assert oracle.total <= total
    for eps in (0.1, 0.2):
        assert report.robust_accuracy("pgd", eps) <= report.clean_accuracy - 0.2, report.table()


# (attack, norm, eps, queries a sample may spend); the attacks' own budgets are 3-5x that
BLACK_BOX_UNDER_A_BUDGET = [
    ("square:max_queries=200", "linf", 0.1, 40),
    ("one-pixel:pixels=3,population=20,iterations=10", "l0", 3, 60),
    ("boundary:max_queries=600", "l2", 1.0, 200),
    ("hopskipjump:max_queries=600", "l2", 1.0, 200),
]


@pytest.mark.parametrize("spec,norm,eps,per_sample", BLACK_BOX_UNDER_A_BUDGET,
                         ids=[spec.partition(":")[0] for spec, *_ in BLACK_BOX_UNDER_A_BUDGET])
def test_black_box_attacks_see_the_shared_budget_through_evaluate_and_keep_their_work(linear_digits, spec, norm,
                                                                                       eps, per_sample):
    # The attacks wrap the evaluation's counting model in oracles of their own: they must see the
    # shared total through it and stop before it. When they did not, the total's refusal threw each
    # batch's work away: every batch "unattacked", robust accuracy = clean (0.962 on 80 samples).
    model, data = linear_digits
    x, y = data.x[:40], data.y[:40]
    total = 40 + 10 + 40 * per_sample  # clean predictions, the reduced checks, the attack's share
    oracle = Oracle(model, max_total=total)
    report = evaluate(oracle, (x, y), [spec], [eps], norm=norm, batch_size=20, progress=False)
    assert total - 20 <= oracle.total <= total  # it spent the budget, and never more
    correct = (model(x).argmax(1) == y)
    robust = report.per_sample[0, 0]
    # measured, robust of 19 / 20 correct per batch: square 8 / 8, one-pixel 10 / 7, boundary
    # 17 / 16, hopskipjump 4 / 5 (no budget: 5 / 3, 6 / 5, 12 / 12, 1 / 1); a no-op keeps 19 / 20
    for start in (0, 20):  # both batches were attacked, and kept what the attack found
        assert int(robust[start:start + 20].sum()) <= int(correct[start:start + 20].sum()) - 2, robust.tolist()
    (warning,) = _budget_warnings(report)
    assert " 0 were not attacked" in warning and "attacked short of the full schedule" in warning


def test_without_a_budget_nothing_changes_and_nothing_warns(linear_digits):
    model, data = linear_digits
    x, y = data.x[:40], data.y[:40]
    report = evaluate(Oracle(model), (x, y), ["square:max_queries=200"], [0.1], progress=False)
    assert not _budget_warnings(report) and report.robust_accuracy("square", 0.1) <= report.clean_accuracy - 0.2


def test_a_budget_too_small_for_any_attack_leaves_the_samples_unattacked_and_says_so(linear_digits):
    model, data = linear_digits
    x, y = data.x[:40], data.y[:40]
    oracle = Oracle(model, max_total=40 + 20 + 5)
    report = evaluate(oracle, (x, y), ["square:max_queries=200"], [0.1], progress=False)
    assert oracle.total <= 65 and report.robust_accuracy("square", 0.1) == report.clean_accuracy
    (warning,) = _budget_warnings(report)
    assert f"{int(report.clean_accuracy * 40)} were not attacked" in warning


def test_a_budget_below_the_clean_predictions_is_a_clear_error(linear_digits):
    model, data = linear_digits
    with pytest.raises(GibbonInputError, match="fewer than the 40 clean predictions"):
        evaluate(Oracle(model, max_total=50), (data.x[:40], data.y[:40]), ["square"], [0.1], progress=False)
    assert Oracle(model, max_total=50).total_remaining() == 50
