"""Threat models: the Lp norms an adversary's perturbation is measured and bounded in.

Each norm is a small frozen object with four operations that one attack loop needs:

* ``distance(delta) -> [B]``: the per-sample norm of a batch of perturbations;
* ``project(delta, eps)``: the closest point of the eps-ball (Euclidean projection);
* ``ascent(grad)``: the steepest-ascent direction of unit norm, i.e.
  ``argmax_{||d|| <= 1} <grad, d>`` (the dual-norm maximiser);
* ``sample(like, eps, generator)``: a point drawn uniformly from the eps-ball.

``eps`` is a float or a per-sample tensor of shape ``[B]``. Box constraints are *not* handled
here: clamping ``x + delta`` into the valid box afterwards only shrinks every coordinate of
``delta`` towards zero, so it never leaves the ball (for any Lp norm).

References:
    Duchi, Shalev-Shwartz, Singer, Chandra (2008), "Efficient Projections onto the l1-Ball for
    Learning in High Dimensions" (the sort-based L1 projection used here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_TINY = 1e-12


def _per_sample(eps: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast ``eps`` (float or ``[B]``) to shape ``[B, 1, 1, ...]`` matching ``like``."""
    eps = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    if eps.ndim == 0:
        eps = eps.expand(like.shape[0])
    return eps.reshape(-1, *([1] * (like.ndim - 1)))


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


@dataclass(frozen=True)
class Norm:
    """Base class: subclasses implement the four threat-model operations."""

    name: str
    p: float

    def distance(self, delta: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def project(self, delta: torch.Tensor, eps) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def ascent(self, grad: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample(self, like: torch.Tensor, eps, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def __str__(self) -> str:
        return self.name


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    # Draw on the generator's device (so a CPU generator works for a CUDA batch), then move.
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _rand(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


@dataclass(frozen=True)
class LinfNorm(Norm):
    """L-infinity: the largest change of any single feature."""

    def distance(self, delta):
        return _flat(delta).abs().amax(dim=1)

    def project(self, delta, eps):
        e = _per_sample(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e)

    def ascent(self, grad):
        return grad.sign()

    def sample(self, like, eps, generator=None):
        return (2 * _rand(like.shape, like, generator) - 1) * _per_sample(eps, like)


@dataclass(frozen=True)
class L2Norm(Norm):
    """L2: the Euclidean length of the perturbation."""

    def distance(self, delta):
        return _flat(delta).norm(p=2, dim=1)

    def project(self, delta, eps):
        n = self.distance(delta).reshape(-1, *([1] * (delta.ndim - 1)))
        factor = torch.clamp(_per_sample(eps, delta) / n.clamp_min(_TINY), max=1.0)
        return delta * factor

    def ascent(self, grad):
        n = self.distance(grad).reshape(-1, *([1] * (grad.ndim - 1)))
        return grad / n.clamp_min(_TINY)

    def sample(self, like, eps, generator=None):
        # Uniform in the ball: a uniform direction (normalised Gaussian) and radius eps * u^(1/d).
        d = _flat(like).shape[1]
        direction = self.ascent(_randn(like, generator))
        radius = _rand((like.shape[0],), like, generator) ** (1.0 / d)
        return direction * radius.reshape(-1, *([1] * (like.ndim - 1))) * _per_sample(eps, like)


def _project_l1(flat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Batched Euclidean projection of each row onto the L1 ball of radius eps (Duchi et al. 2008)."""
    abs_v = flat.abs()
    inside = abs_v.sum(dim=1) <= eps
    mu, _ = abs_v.sort(dim=1, descending=True)
    cumsum = mu.cumsum(dim=1)
    ks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    cond = mu - (cumsum - eps[:, None]) / ks > 0
    rho = cond.to(flat.dtype).mul(ks).argmax(dim=1)  # last index where cond holds
    theta = (cumsum.gather(1, rho[:, None]).squeeze(1) - eps) / (rho + 1).to(flat.dtype)
    projected = flat.sign() * (abs_v - theta[:, None]).clamp_min(0)
    return torch.where(inside[:, None], flat, projected)


@dataclass(frozen=True)
class L1Norm(Norm):
    """L1: the total absolute change summed over features."""

    def distance(self, delta):
        return _flat(delta).abs().sum(dim=1)

    def project(self, delta, eps):
        e = _per_sample(eps, delta).reshape(-1)
        return _project_l1(_flat(delta), e).reshape(delta.shape)

    def ascent(self, grad):
        # The dual of L1 is L-infinity: the maximiser puts all mass on the largest |grad| entry.
        flat = _flat(grad)
        idx = flat.abs().argmax(dim=1, keepdim=True)
        out = torch.zeros_like(flat).scatter_(1, idx, flat.gather(1, idx).sign())
        return out.reshape(grad.shape)

    def sample(self, like, eps, generator=None):
        # Uniform in the L1 ball: d+1 exponentials normalised by their sum give a uniform point
        # of the simplex interior; random signs spread it over the 2^d orthants.
        flat = _flat(like)
        d = flat.shape[1]
        e = -torch.log(_rand((flat.shape[0], d + 1), like, generator).clamp_min(_TINY))
        point = e[:, :d] / e.sum(dim=1, keepdim=True)
        signs = torch.where(_rand(point.shape, like, generator) < 0.5, -1.0, 1.0).to(like.dtype)
        return (point * signs).reshape(like.shape) * _per_sample(eps, like)


def _top_k_mask(scores: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean mask of each row's ``k[row]`` largest scores (ties broken by position)."""
    order = scores.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    return rank < k[:, None]


@dataclass(frozen=True)
class L0Norm(Norm):
    """L0: the number of features changed (eps is a count; its integer part is used)."""

    def distance(self, delta):
        return (_flat(delta) != 0).sum(dim=1).to(delta.dtype)

    def _count(self, eps, like) -> torch.Tensor:
        return _per_sample(eps, like).reshape(-1).floor().long().clamp(0, _flat(like).shape[1])

    def project(self, delta, eps):
        flat = _flat(delta)
        keep = _top_k_mask(flat.abs(), self._count(eps, delta))
        return torch.where(keep, flat, torch.zeros_like(flat)).reshape(delta.shape)

    def ascent(self, grad):
        # A unit-L0 step changes one feature: the one with the largest |grad| (as L1's dual).
        return L1.ascent(grad)

    def sample(self, like, eps, generator=None):
        # floor(eps) features chosen uniformly at random, each moved by a uniform amount in
        # [-1, 1]: L0 bounds how many features change, not how much (the box does that).
        flat = _flat(like)
        keep = _top_k_mask(_rand(flat.shape, like, generator), self._count(eps, like))
        values = 2 * _rand(flat.shape, like, generator) - 1
        return torch.where(keep, values, torch.zeros_like(values)).reshape(like.shape)


LINF = LinfNorm("linf", math.inf)
L2 = L2Norm("l2", 2.0)
L1 = L1Norm("l1", 1.0)
L0 = L0Norm("l0", 0.0)

NORMS: dict[str, Norm] = {n.name: n for n in (LINF, L2, L1, L0)}


def get_norm(norm: str | Norm) -> Norm:
    """Return the norm object for ``"linf" | "l2" | "l1" | "l0"`` (or pass a Norm through)."""
    if isinstance(norm, Norm):
        return norm
    key = str(norm).lower().strip()
    aliases = {"inf": "linf", "l_inf": "linf", "linfinity": "linf", "2": "l2", "1": "l1", "0": "l0"}
    key = aliases.get(key, key)
    if key not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    return NORMS[key]
