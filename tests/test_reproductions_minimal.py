"""Minimal-perturbation and few-pixel attack reproductions (slow ones train LeNet-5 / FC 500-150 on MNIST)."""

from __future__ import annotations

from gibbon.reproductions import minimal_attacks

IDS = ["moosavi2016-deepfool", "carlini2017-cw", "carlini2017-cw-paper-net", "papernot2016-jsma", "su2019-onepixel"]


def test_targets_are_listed_with_a_citation():
    targets = minimal_attacks.targets()
    assert [t.id for t in targets] == IDS
    for target in targets:
        assert target.run.__doc__ and "arXiv" in target.run.__doc__
        assert target.paper and target.claim
