"""Gradient-aligned adversarial subspaces (Tramèr, Papernot, Goodfellow, Boneh & McDaniel 2017,
"The Space of Transferable Adversarial Examples", arXiv:1704.03453, section 3.1).

Threat model: white-box on the source model, L2 budget ``eps``, untargeted; the directions are
then sent to a target model (transfer). For an input ``x`` with loss gradient ``g`` and each
``k`` tried, GAAS builds ``k`` *orthonormal* directions ``r_1..r_k`` all at the same angle with
the gradient, ``<r_i, g> = ||g|| / sqrt(k)``, the most each of ``k`` orthogonal directions can
share (the paper's lemma). Each ``x + eps * r_i`` is a first-order adversarial example when
``eps ||g|| / sqrt(k)`` exceeds the loss gap. The number of them that actually fool the model
estimates the dimension of the adversarial subspace around ``x``; the number that also fool
the target estimates the dimension of the *transferable* subspace.

Construction: a Householder reflection ``H`` (k x k) maps ``e_1`` to ``(1, ..., 1) / sqrt(k)``,
so its rows are orthonormal with first coordinate ``1 / sqrt(k)``; a second reflection maps
``e_1`` to ``g / ||g||`` in input space and carries those rows there. The points are clipped
into the input box, which the paper's construction ignores; a clipped direction can fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import input_gradient
from gibbon.core.checks import GibbonInputError
from gibbon.core.goals import is_adversarial
from gibbon.core.losses import cross_entropy


def aligned_directions(grad: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` orthonormal directions per row of ``grad [B, d]`` with ``<r_i, g> = ||g|| / sqrt(k)``.

    Returns:
        ``[B, k, d]``.

    Example:
        >>> r = aligned_directions(torch.tensor([[3.0, 4.0, 0.0, 0.0]]), 2)
        >>> torch.allclose(r[0] @ r[0].T, torch.eye(2), atol=1e-6), r[0] @ torch.tensor([0.6, 0.8, 0.0, 0.0])
        (True, tensor([0.7071, 0.7071]))
    """
    n, d = grad.shape
    if not 1 <= k <= d:
        raise GibbonInputError(f"k must be between 1 and the input dimension {d}, got {k}")
    u = torch.full((k,), k ** -0.5, dtype=grad.dtype, device=grad.device)
    v = -u
    v[0] += 1.0  # e_1 - u
    h = torch.eye(k, dtype=grad.dtype, device=grad.device)
    if float(v.norm()) > 1e-12:
        h = h - 2 * torch.outer(v, v) / (v @ v)  # rows orthonormal, first coordinate 1/sqrt(k)
    rows = torch.zeros(n, k, d, dtype=grad.dtype, device=grad.device)
    rows[:, :, :k] = h
    g_hat = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w = -g_hat
    w[:, 0] += 1.0  # e_1 - g_hat: the reflection through w maps e_1 to g_hat
    ww = (w * w).sum(dim=1).clamp_min(1e-24)
    proj = torch.einsum("bkd,bd->bk", rows, w)
    reflected = rows - 2 * proj[:, :, None] * w[:, None, :] / ww[:, None, None]
    aligned = (ww <= 1e-20)[:, None, None]  # g already along e_1: no reflection needed
    return torch.where(aligned, rows, reflected)


@dataclass
class SubspaceResult:
    """Per-sample counts of GAAS directions (:func:`adversarial_subspace`)."""

    directions: torch.Tensor  # [N] most adversarial directions found for the source (over the ks)
    transferred: torch.Tensor  # [N] of those, how many also fool the target
    best_k: torch.Tensor  # [N] the k that gave ``directions``
    ks: tuple

    @property
    def mean_directions(self) -> float:
        return float(self.directions.float().mean())

    @property
    def mean_transferred(self) -> float:
        return float(self.transferred.float().mean())


def adversarial_subspace(source, target, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                         ks=(1, 2, 5, 10, 20, 50, 100), bounds=(0.0, 1.0), batch_size: int = 2000) -> SubspaceResult:
    """Count orthogonal adversarial directions (GAAS) of ``source`` and how many transfer to ``target``.

    Args:
        source: differentiable model ``x -> logits`` (white-box). target: any model (predictions only).
        x, y: inputs and labels (use correctly classified ones). eps: L2 length of each direction.
        ks: numbers of directions tried; per sample the k with the most adversarial directions wins.
        bounds: box the points are clipped into. batch_size: points per forward pass.

    Returns:
        :class:`SubspaceResult`.
    """
    if eps <= 0 or not ks:
        raise GibbonInputError("adversarial_subspace needs eps > 0 and at least one k")
    x = x.detach()
    grad, _, _ = input_gradient(source, x, y, cross_entropy)
    flat = grad.reshape(len(x), -1)
    n = len(x)
    best = torch.zeros(n, dtype=torch.long)
    moved = torch.zeros(n, dtype=torch.long)
    best_k = torch.zeros(n, dtype=torch.long)
    for k in ks:
        r = aligned_directions(flat, int(k))  # [N, k, d]
        points = (x[:, None] + eps * r.reshape(n, int(k), *x.shape[1:])).clamp(*bounds).reshape(-1, *x.shape[1:])
        labels = y.repeat_interleave(int(k))
        with torch.no_grad():
            fool_s = torch.cat([is_adversarial(source(c), l) for c, l in
                                zip(points.split(batch_size), labels.split(batch_size))]).reshape(n, int(k))
            fool_t = torch.cat([is_adversarial(target(c), l) for c, l in
                                zip(points.split(batch_size), labels.split(batch_size))]).reshape(n, int(k))
        count, both = fool_s.sum(1).cpu(), (fool_s & fool_t).sum(1).cpu()
        better = count > best
        best, moved, best_k = torch.where(better, count, best), torch.where(better, both, moved), \
            torch.where(better, torch.full_like(best_k, int(k)), best_k)
    return SubspaceResult(best, moved, best_k, tuple(int(k) for k in ks))
