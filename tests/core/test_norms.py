"""Property tests of the threat models: projection, ascent direction, sampling."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gibbon.core.norms import L0, L1, L2, LINF, get_norm

NORMS = [LINF, L2, L1]
TOL = 1e-5

tensors = st.builds(
    lambda seed, scale, b, d: torch.randn(b, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale,
    st.integers(0, 10_000), st.floats(1e-3, 10.0), st.integers(1, 5), st.integers(1, 40),
)
radii = st.floats(1e-3, 5.0)


@settings(max_examples=60, deadline=None)
@given(delta=tensors, eps=radii)
def test_projection_lands_in_ball_and_is_idempotent(delta, eps):
    for norm in NORMS:
        p = norm.project(delta, eps)
        assert float(norm.distance(p).max()) <= eps * (1 + TOL)
        assert torch.allclose(norm.project(p, eps), p, atol=1e-9)
        inside = norm.distance(delta) <= eps
        assert torch.allclose(p[inside], delta[inside])


@settings(max_examples=40, deadline=None)
@given(delta=tensors, eps=radii)
def test_projection_is_the_closest_point(delta, eps):
    """No random point of the ball is closer (in L2) to delta than its projection."""
    g = torch.Generator().manual_seed(1)
    for norm in NORMS:
        p = norm.project(delta, eps)
        others = norm.project(torch.randn(200, *delta.shape, generator=g, dtype=delta.dtype) * eps, eps)
        d_proj = (delta - p).norm(dim=-1)
        d_other = (delta.unsqueeze(0) - others).norm(dim=-1).amin(dim=0)
        assert bool((d_proj <= d_other + 1e-7).all())


@settings(max_examples=60, deadline=None)
@given(grad=tensors)
def test_ascent_is_unit_and_maximises_inner_product(grad):
    dual = {LINF.name: 1.0, L2.name: 2.0, L1.name: math.inf}
    g = torch.Generator().manual_seed(2)
    for norm in NORMS:
        d = norm.ascent(grad)
        nonzero = grad.abs().amax(dim=1) > 0
        assert torch.allclose(norm.distance(d)[nonzero], torch.ones(int(nonzero.sum()), dtype=grad.dtype))
        best = (d * grad).sum(dim=1)
        # <grad, d> equals the dual norm of grad: the maximum over the unit ball
        assert torch.allclose(best, grad.norm(p=dual[norm.name], dim=1), rtol=1e-6)
        rivals = norm.project(torch.randn(100, *grad.shape, generator=g, dtype=grad.dtype) * 3, 1.0)
        assert bool(((rivals * grad).sum(dim=-1) <= best + 1e-9).all())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 1000), eps=radii)
def test_samples_lie_in_ball(seed, eps):
    like = torch.zeros(50, 3, 4, 4, dtype=torch.float64)
    for norm in NORMS:
        s = norm.sample(like, eps, torch.Generator().manual_seed(seed))
        assert s.shape == like.shape
        assert float(norm.distance(s).max()) <= eps * (1 + TOL)


def test_samples_fill_the_ball():
    """Uniform in the ball: the fraction within radius r*eps is r^d (checked for d=2)."""
    like = torch.zeros(20_000, 2, dtype=torch.float64)
    for norm in NORMS:
        s = norm.sample(like, 1.0, torch.Generator().manual_seed(0))
        frac = float((norm.distance(s) <= 0.5).double().mean())
        assert abs(frac - 0.25) < 0.02, (norm.name, frac)


def test_l0_projection_keeps_the_largest_entries():
    delta = torch.tensor([[0.1, -3.0, 0.2, 2.0, 0.0]])
    assert torch.equal(L0.project(delta, 2), torch.tensor([[0.0, -3.0, 0.0, 2.0, 0.0]]))
    assert float(L0.distance(L0.sample(torch.zeros(4, 10), 3, torch.Generator().manual_seed(0))).max()) <= 3


def test_per_sample_eps():
    delta = torch.ones(3, 4)
    eps = torch.tensor([0.1, 0.5, 1.0])
    assert torch.allclose(LINF.distance(LINF.project(delta, eps)), eps)
    assert torch.allclose(L2.distance(L2.project(delta, eps)), eps)


def test_get_norm_names():
    assert get_norm("Linf") is LINF and get_norm("inf") is LINF and get_norm("l2") is L2
    try:
        get_norm("l3")
    except ValueError as err:
        assert "linf" in str(err)
    else:
        raise AssertionError("l3 accepted")
