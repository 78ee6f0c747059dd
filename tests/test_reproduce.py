"""The papers' headline numbers (slow: they train on real MNIST). Run with `make test-slow`."""

from __future__ import annotations

import pytest

from gibbon import reproduce


def test_every_target_is_listed_with_a_citation():
    assert set(reproduce.TARGETS) >= {"goodfellow2015-softmax", "goodfellow2015-logistic", "madry2018-natural"}
    for target in reproduce.TARGETS.values():
        assert target.run.__doc__ and "arXiv" in target.run.__doc__


@pytest.mark.slow
@pytest.mark.parametrize("target_id", sorted(reproduce.TARGETS))
def test_reproduction_meets_its_target(target_id):
    outcome = reproduce.run(target_id)
    failed = [r for r in outcome["rows"] if not r["ok"]]
    assert outcome["passed"], f"{target_id}: {failed}"
