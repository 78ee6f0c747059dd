"""Straight-through gradients found in a model's own forward: same values, a gradient where there was none."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gibbon.defenses.straight_through import StraightThrough

FRONTS = {
    "threshold .float()": (lambda x: (x > 0.5).float(), "float"),
    "threshold .to(dtype)": (lambda x: (x > 0.5).to(x.dtype), "to"),
    "reversed comparison": (lambda x: (0.5 > x).float(), "float"),
    "torch.where": (lambda x: torch.where(x >= 0.5, 1.0, 0.0), "where"),
    "round": (lambda x: torch.round(x * 15) / 15, "round"),
    "floor": (lambda x: torch.floor(x * 4) / 4, "floor"),
    "sign": (lambda x: torch.sign(x - 0.5), "sign"),
    "detach": (lambda x: x.detach(), "detach"),
    "thermometer": (lambda x: (x.unsqueeze(-1) > torch.tensor([0.2, 0.4, 0.6, 0.8])).float().mean(-1), "float"),
}


class Front(nn.Module):
    def __init__(self, front):
        super().__init__()
        self.front = front
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(self.front(x))


def _grad(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    if not out.requires_grad:
        return None
    (g,) = torch.autograd.grad(out[:, 0].sum(), x, allow_unused=True)
    return g


@pytest.mark.parametrize("name", sorted(FRONTS))
def test_values_are_exact_and_a_gradient_appears(name):
    front, op = FRONTS[name]
    model = Front(front)
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    straight = StraightThrough(model)
    assert torch.equal(straight(x), model(x))
    plain = _grad(model, x)
    assert plain is None or float(plain.abs().sum()) == 0.0 or name == "detach"
    g = _grad(straight, x)
    assert g is not None and float(g.abs().sum()) > 0, name
    assert straight.replaced.get(op, 0) >= 1, straight.replaced


def test_identity_backward_of_a_rounding_front_is_the_inner_gradient():
    model = Front(lambda x: torch.round(x * 15) / 15)
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    inner = Front(lambda x: x)
    inner.net = model.net
    # straight-through: d model / dx is the inner network's gradient at round(x)
    expected = _grad(inner, torch.round(x * 15) / 15)
    assert torch.allclose(_grad(StraightThrough(model), x), expected)


def test_a_numpy_round_trip_stays_cut_and_does_not_crash():
    model = Front(lambda x: torch.from_numpy(np.round(x.detach().numpy())))
    x = torch.rand(2, 1, 4, 4)
    straight = StraightThrough(model)
    assert torch.equal(straight(x), model(x))
    assert _grad(straight, x) is None  # nothing to see through: the remedies fall back to gradient-free attacks


def test_the_mode_is_off_outside_the_call():
    model = Front(lambda x: (x > 0.5).float())
    StraightThrough(model)(torch.rand(2, 1, 4, 4))
    x = torch.rand(2, 1, 4, 4, requires_grad=True)
    assert not model(x).requires_grad or _grad(model, x) is None
