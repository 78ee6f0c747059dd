"""The papers' headline numbers (slow: they train on real MNIST). Run with `make test-slow`."""

from __future__ import annotations

import pytest

from gibbon import reproduce


# Measured misses, kept visible rather than loosened (docs/reproduction.md explains each): none now.
KNOWN_MISSES: dict[str, str] = {}


def test_every_target_is_listed_with_a_citation():
    assert set(reproduce.TARGETS) >= {"goodfellow2015-softmax", "goodfellow2015-logistic", "madry2018-natural",
                                      "moosavi2016-deepfool", "carlini2017-cw", "carlini2017-cw-paper-net",
                                      "papernot2016-jsma", "su2019-onepixel", "wong2020-fast-reliable", "papernot2017-substitute",
                                      "papernot2016-transferability", "tramer2017-gaas"}
    for target in reproduce.TARGETS.values():
        assert target.run.__doc__ and "arXiv" in target.run.__doc__


@pytest.mark.slow
@pytest.mark.parametrize("target_id", [
    pytest.param(t, marks=pytest.mark.xfail(reason=KNOWN_MISSES[t], strict=False)) if t in KNOWN_MISSES else t
    for t in sorted(reproduce.TARGETS)
])
def test_reproduction_meets_its_target(target_id):
    outcome = reproduce.run(target_id)
    failed = [r for r in outcome["rows"] if not r["ok"]]
    assert outcome["passed"], f"{target_id}: {failed}"
