"""One-pixel / few-pixel attack (arXiv:1710.08864) on the digits MLP.

Measured on the 100 first test digits (97 classified correctly), seed 0, the paper's DE
(population 400, 100 iterations, F = 0.5): untargeted success 81.4% / 99.0% / 100% of the
correctly classified images with 1 / 3 / 5 pixels; targeted (y + 1) % 10 with 5 pixels: 93%.
Thresholds leave room for seeds.
"""

from __future__ import annotations

import pytest
import torch

from gibbon.attacks import ATTACKS, one_pixel
from gibbon.attacks.one_pixel import apply_candidates
from gibbon.core.checks import GibbonInputError
from gibbon.oracles import Oracle

FLOOR = {1: 0.6, 3: 0.9, 5: 0.95}


class BlackBox(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        assert not x.requires_grad and not torch.is_grad_enabled(), "one-pixel asked for a gradient"
        return self.model(x)


@pytest.fixture(scope="module")
def hundred(digits):
    _, _, x, y = digits
    return x[:100], y[:100]


def _attack(model, x, y, **kw):
    oracle = Oracle(BlackBox(model), n=len(x))
    return one_pixel(oracle, x, y, generator=torch.Generator().manual_seed(0), **kw), oracle


def test_success_grows_with_pixels(digits_mlp, hundred):
    x, y = hundred
    correct = digits_mlp(x).argmax(1) == y
    rates = {}
    for pixels in (1, 3, 5):
        x_adv, oracle = _attack(digits_mlp, x, y, pixels=pixels)
        fooled = (digits_mlp(x_adv).argmax(1) != y) & correct
        rates[pixels] = float(fooled.sum() / correct.sum())
        assert int((x_adv != x).flatten(1).sum(1).max()) <= pixels
        assert int(oracle.queries.max()) <= 400 * 101
    print("one-pixel untargeted success by pixels:", {k: round(v, 3) for k, v in rates.items()})
    assert rates[1] <= rates[3] <= rates[5], f"success must not fall with more pixels: {rates}"
    for pixels, floor in FLOOR.items():
        assert rates[pixels] >= floor, f"{pixels} pixel(s): success {rates[pixels]:.3f} < {floor}"


def test_targeted(digits_mlp, hundred):
    x, y = hundred
    target = (y + 1) % 10
    x_adv, _ = _attack(digits_mlp, x, y, pixels=5, target=target)
    hit = float((digits_mlp(x_adv).argmax(1) == target).float().mean())
    print(f"one-pixel targeted success with 5 pixels: {hit:.3f}")
    assert hit >= 0.7, f"targeted success {hit:.3f} < 0.7"


def test_max_queries_is_respected_and_shrinks_the_population(digits_mlp, hundred):
    x, y = hundred
    x_adv, oracle = _attack(digits_mlp, x, y, pixels=1, max_queries=250, population=100)
    assert int(oracle.queries.max()) <= 250
    assert set(oracle.queries.tolist()) <= {100, 200}, "whole generations of 100 candidates only"
    _, small = _attack(digits_mlp, x, y, pixels=1, max_queries=50)  # population 400 -> 50
    assert set(small.queries.tolist()) == {50}
    with pytest.raises(GibbonInputError, match="population >= 3"):
        one_pixel(digits_mlp, x, y, pixels=1, max_queries=2)


def test_eps_counts_features_when_pixels_is_none(digits_mlp, hundred):
    x, y = hundred
    x_adv, _ = _attack(digits_mlp, x, y, eps=3.0, norm="l0", population=50, iterations=10)
    assert int((x_adv != x).flatten(1).sum(1).max()) <= 3
    rgb = x.expand(-1, 3, -1, -1).contiguous()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1, bias=False), digits_mlp)
    torch.nn.init.constant_(model[0].weight, 1 / 3)
    x_adv, _ = _attack(model, rgb, y, eps=torch.full((100,), 7.0), population=50, iterations=5)
    changed_pixels = (x_adv != rgb).any(1).flatten(1).sum(1)
    assert int((x_adv != rgb).flatten(1).sum(1).max()) <= 7 and int(changed_pixels.max()) <= 2


def test_apply_candidates():
    x = torch.zeros(2, 2, 3, 3)
    cand = torch.tensor([[[0.2, 2.4, 0.5, 0.7], [9.0, -1.0, 1.0, 1.0]],
                         [[1.0, 1.0, 0.3, 0.3], [0.0, 0.0, 0.9, 0.9]]])
    active = torch.tensor([[True, True], [True, False]])
    out = apply_candidates(x, cand, active)
    assert out[0, :, 0, 2].tolist() == pytest.approx([0.5, 0.7]) and out[0, :, 2, 0].tolist() == [1.0, 1.0]
    assert out[1, :, 1, 1].tolist() == pytest.approx([0.3, 0.3]) and float(out[1, :, 0, 0].abs().sum()) == 0.0
    assert int((out != 0).sum()) == 6 and float(x.abs().sum()) == 0.0


def test_registered_as_black_box():
    cls = ATTACKS["one-pixel"]
    assert cls.black_box and cls.randomized and cls.norms == ("l0",) and cls().population == 400
