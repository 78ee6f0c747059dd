"""Gradient-aligned adversarial subspaces (Tramèr et al. 2017, arXiv:1704.03453)."""

from __future__ import annotations

import math

import pytest
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.transfer import adversarial_subspace, aligned_directions


@pytest.mark.parametrize("k", [1, 3, 16, 50])
def test_directions_are_orthonormal_and_equally_aligned_with_the_gradient(k):
    g = torch.randn(4, 64, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    r = aligned_directions(g, k)
    g_hat = g / g.norm(dim=1, keepdim=True)
    for i in range(4):
        assert torch.allclose(r[i] @ r[i].T, torch.eye(k, dtype=torch.float64), atol=1e-10)
        assert torch.allclose(r[i] @ g_hat[i], torch.full((k,), k ** -0.5, dtype=torch.float64), atol=1e-10)
    with pytest.raises(GibbonInputError, match="between 1"):
        aligned_directions(g, 65)


def test_linear_model_has_the_closed_form_number_of_directions():
    """Two-class linear model, logit gap f: a direction at angle 1/sqrt(k) with w moves the gap by
    eps ||w|| / sqrt(k), so all k directions are adversarial iff k < (eps ||w|| / f)^2."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(100, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(100, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.stack([torch.zeros(100, dtype=torch.float64), w]))
        model.bias.zero_()
    x = torch.randn(30, 100, generator=g, dtype=torch.float64)
    x = x - ((x @ w)[:, None] + torch.rand(30, 1, generator=g, dtype=torch.float64) * 3 + 0.5) * w / (w @ w)
    y = torch.zeros(30, dtype=torch.long)  # class 0: w.x < 0
    gap = -(x @ w)
    eps, ks = 2.0, (1, 2, 4, 8, 16, 32, 64)
    result = adversarial_subspace(model, model, x, y, eps=eps, ks=ks, bounds=(-1e3, 1e3))
    limit = (eps * w.norm() / gap) ** 2
    expected = torch.tensor([max([k for k in ks if k < float(lim)], default=0) for lim in limit])
    assert torch.equal(result.directions, expected), (result.directions, expected)
    assert torch.equal(result.transferred, result.directions)  # the target is the source itself
    assert math.isclose(result.mean_directions, float(expected.float().mean()))
