"""The papers' headline numbers (slow: they train on real MNIST). Run with `make test-slow`."""

from __future__ import annotations

import pytest

from gibbon import reproduce


# Measured misses, kept visible rather than loosened (docs/reproduction.md explains each).
KNOWN_MISSES = {
    "papernot2017-substitute": "the oracle keeps 32-35% (target <= 30%) with the paper's settings against "
                               "tramer-b (substitute at the paper's 81%); an MLP trained on all of MNIST leaves 14.5%",
}


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


def test_the_transfer_matrix_noise_floor_counts_what_random_signs_alone_fool():
    import torch

    from gibbon.reproductions.blackbox import _random_sign_rates

    class FirstPixel(torch.nn.Module):  # class 1 once the first pixel passes 0.5: random signs flip half
        def forward(self, x):
            p = x.flatten(1)[:, :1]
            return torch.cat([0.5 - p, p - 0.5], dim=1)

    class Constant(torch.nn.Module):  # ignores its input: noise can never fool it
        def forward(self, x):
            return torch.tensor([[1.0, 0.0]]).expand(len(x), 2)

    x, y = torch.full((400, 1, 4, 4), 0.4), torch.zeros(400, dtype=torch.long)
    rates = _random_sign_rates({"first-pixel": FirstPixel(), "constant": Constant()}, x, y, 0.3, seed=0)
    assert rates["constant"] == 0.0 and 0.4 < rates["first-pixel"] < 0.6, rates
