"""Model probes behind :func:`gibbon.evaluation.diagnose`: what the gradient, the output and a
finite difference say about a model, measured without any attack.

Each probe returns a plain dict of measured numbers; deciding what is suspicious is
:mod:`gibbon.evaluation.diagnose`'s job. No probe fills ``param.grad`` or changes the model's
mode (the caller puts the model in the mode it is deployed in).

References:
    Athalye, Carlini & Wagner (2018), "Obfuscated Gradients Give a False Sense of Security",
    arXiv:1802.00420, section 3 (shattered, stochastic and vanishing/exploding gradients).
    Carlini et al. (2019), "On Evaluating Adversarial Robustness", arXiv:1902.06705, section 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gibbon.evaluation.sanity import RANDOM_TOLERANCE

SATURATION_GAP = 80.0
"""A top-2 logit gap above this saturates the float32 softmax: ``exp(-80) ~ 2e-35``, so the
cross-entropy gradient is numerically nothing (distillation at T=100 produces such gaps)."""

FLAT_CHANGE = 1e-4
"""A loss change above this under a finite step counts as "the loss is not flat here"."""


def input_gradient(model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor | None, str | None]:
    """Per-sample gradient of the summed cross-entropy w.r.t. ``x``; ``(None, why)`` when the
    model's output has no gradient path back to its input (a non-differentiable front end)."""
    x_var = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(model(x_var), y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_var, allow_unused=True)
    except Exception as err:  # noqa: BLE001 - the graph is cut (a NumPy / PIL step inside forward), or worse
        return None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    if grad is None:
        return None, "the output does not depend on the input through autograd"
    return grad.detach(), None


@torch.no_grad()
def per_sample_loss(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y, reduction="none")


def gradient_probe(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, bounds, generator: torch.Generator,
                   gradient: tuple | None = None) -> dict:
    """Zero, non-finite and vanishing gradients, softmax saturation, and whether the loss is flat
    where the gradient is zero (flat: saturation; not flat: a quantizing / shattered front end).

    The flatness test compares the loss at ``x`` with the loss at ``x + U(-eps, eps)`` (three
    draws, clipped into ``bounds``) on the samples whose gradient is exactly zero.
    ``gradient``: :func:`input_gradient`'s answer for ``(x, y)`` when the caller has it already.
    """
    n = int(x.shape[0])
    with torch.no_grad():
        logits = model(x)
    top2 = logits.topk(2, dim=1).values
    saturated = int(((top2[:, 0] - top2[:, 1]) > SATURATION_GAP).sum())
    grad, why = gradient if gradient is not None else input_gradient(model, x, y)
    out = {"samples": n, "saturated": saturated, "saturation_gap": SATURATION_GAP,
           "median_logit_gap": float((top2[:, 0] - top2[:, 1]).median()), "no_gradient_path": why}
    if grad is None:
        return {**out, "zero": n, "nonfinite": 0, "median_gradient_norm": 0.0, "zero_but_not_flat": 0}
    flat = grad.reshape(n, -1)
    zero = (flat == 0).all(dim=1)
    out.update(zero=int(zero.sum()), nonfinite=int((~torch.isfinite(flat)).any(dim=1).sum()),
               median_gradient_norm=float(flat.norm(dim=1).nan_to_num(0.0).median()))
    not_flat = torch.zeros(n, dtype=torch.bool)
    if zero.any():
        xz, yz = x[zero], y[zero]
        base = per_sample_loss(model, xz, yz)
        for _ in range(3):
            noise = (torch.rand(xz.shape, generator=generator) * 2 - 1).to(xz) * eps
            moved = per_sample_loss(model, (xz + noise).clamp(*bounds), yz)
            not_flat[zero.nonzero().squeeze(1).cpu()] |= ((moved - base).abs() > FLAT_CHANGE).cpu()
    out["zero_but_not_flat"] = int(not_flat.sum())
    return out


def finite_difference_probe(model, x: torch.Tensor, y: torch.Tensor, *, step: float, bounds,
                            generator: torch.Generator, directions: int = 4, gradient: tuple | None = None) -> dict:
    """Does autograd agree with finite differences along random sign directions?

    For each sample and each of ``directions`` random ``v`` in ``{-1, 1}^d``, the central
    difference ``(L(x + step v) - L(x - step v)) / 2`` is compared with autograd's prediction
    ``step * <grad, v>``. The decisive pattern is *autograd says zero, the loss moves*: a
    quantizing or otherwise shattered front end, whose gradient must be replaced (BPDA).
    ``cut`` is set when no gradient reaches the input at all. ``gradient``: as in
    :func:`gradient_probe`.
    """
    grad, why = gradient if gradient is not None else input_gradient(model, x, y)
    low, high = bounds
    disagree, informative, total = 0, 0, 0
    for _ in range(directions):
        v = (torch.randint(0, 2, x.shape, generator=generator) * 2 - 1).to(x)
        plus = per_sample_loss(model, (x + step * v).clamp(low, high), y)
        minus = per_sample_loss(model, (x - step * v).clamp(low, high), y)
        change = (plus - minus) / 2
        predicted = torch.zeros_like(change) if grad is None else step * (grad * v).reshape(len(x), -1).sum(dim=1)
        moved = change.abs() > FLAT_CHANGE
        informative += int(moved.sum())
        disagree += int((moved & (predicted.abs() <= 1e-12)).sum())
        total += len(x)
    return {"pairs": total, "loss_moved": informative, "autograd_zero_where_loss_moved": disagree,
            "step": step, "cut": why}


@torch.no_grad()
def randomness_probe(model, x: torch.Tensor, *, calls: int = 3, tolerance: float = RANDOM_TOLERANCE) -> dict:
    """Same input, several calls: how many predictions change, and the largest relative logit change."""
    outputs = [model(x) for _ in range(calls)]
    first = outputs[0]
    scale = float(first.abs().max().clamp_min(1e-12))
    changed = torch.zeros(len(x), dtype=torch.bool, device=first.device)
    worst = 0.0
    for other in outputs[1:]:
        changed |= other.argmax(1) != first.argmax(1)
        worst = max(worst, float((other - first).abs().max()) / scale)
    return {"samples": len(x), "calls": calls, "predictions_changed": int(changed.sum()),
            "max_relative_logit_change": worst, "random": bool(changed.any() or worst > tolerance)}
