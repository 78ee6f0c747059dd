"""Named suites: the reliable (AutoAttack-style) cascade is at least as strong as its parts."""

import pytest

from gibbon.core.checks import GibbonInputError
from gibbon.evaluation import evaluate
from gibbon.evaluation.suites import SUITES


def test_reliable_suite_is_a_cascade_at_least_as_strong_as_pgd(linear_digits):
    model, data = linear_digits
    reliable = evaluate(model, data, eps=[0.05, 0.1], suite="reliable", progress=False)
    pgd = evaluate(model, data, ["pgd:steps=40"], [0.05, 0.1], progress=False)
    names = [r.attack for r in reliable.results if r.eps == 0.1]
    assert names == ["apgd-ce", "apgd-t", "fab", "square"]
    assert all(r.partial for r in reliable.results if r.attack != "apgd-ce")
    for eps in (0.05, 0.1):
        assert reliable.worst_case_accuracy(eps) <= pgd.worst_case_accuracy(eps), eps
    # a no-op evaluation keeps the clean accuracy: the suite really attacked
    assert reliable.worst_case_accuracy(0.1) < reliable.clean_accuracy - 0.3


def test_quick_suite_and_extra_attacks(linear_digits):
    model, data = linear_digits
    report = evaluate(model, data, ["fgsm"], [0.1], suite="quick", progress=False)
    assert [r.attack for r in report.results] == ["apgd-ce", "apgd-t", "fgsm"]
    assert report.config["suite"] == "quick" and report.config["cascade"] is True


def test_unknown_suite():
    with pytest.raises(GibbonInputError, match="reliable"):
        evaluate(None, None, eps=[0.1], suite="nosuch")


def test_suites_name_registered_attacks():
    from gibbon.attacks import ATTACKS, parse_attack

    for specs in SUITES.values():
        for spec in specs:
            assert parse_attack(spec).name in ATTACKS
