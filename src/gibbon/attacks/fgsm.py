"""Fast gradient sign method / fast gradient method (Goodfellow, Shlens & Szegedy 2015,
arXiv:1412.6572).

White-box, single step, budget attack: ``x_adv = x + eps * ascent(grad_x J(x, y))`` where
``ascent`` is the norm's unit steepest-ascent direction (``sign`` for L-infinity, the
normalised gradient for L2: the "fast gradient method"). Targeted: a step *down* the loss of
the target class. The result is projected into the ball and the valid box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import input_gradient, prepare, project_in_box, scale
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.norms import get_norm

NORMS = ("linf", "l2", "l1")


def gradient_step(model, x, y, *, eps, norm, loss, target, bounds) -> torch.Tensor:
    """One projected step of length ``eps`` along the norm's ascent direction (shared with R+FGSM)."""
    labels = target if target is not None else y
    grad, _, _ = input_gradient(model, x, labels, loss)
    direction = norm.ascent(-grad if target is not None else grad)
    return project_in_box(x, scale(direction, eps), norm, eps, bounds)


def fgsm(model, x, y, *, eps, norm="linf", loss="ce", target=None, bounds=(0.0, 1.0),
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Fast gradient (sign) method.

    Args:
        model: callable ``x -> logits``. x: inputs ``(B, ...)`` in ``bounds``. y: labels ``(B,)``.
        eps: step length = ball radius (float or ``(B,)``). norm: ``linf`` (FGSM), ``l2``, ``l1``.
        loss: per-sample loss (default cross-entropy). target: classes ``(B,)`` or None.
        bounds: valid input box. generator: unused (deterministic), accepted for a uniform API.

    Returns:
        ``x_adv`` shaped like ``x``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> x = torch.full((1, 1, 2, 2), 0.5)
        >>> round(float((fgsm(model, x, torch.tensor([0]), eps=0.1) - x).abs().max()), 6)
        0.1
    """
    bounds = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS,
                     model=model)
    norm = get_norm(norm)
    x = x.detach()
    return x + gradient_step(model, x, y, eps=eps, norm=norm, loss=loss, target=target, bounds=bounds)


@register("fgsm")
@dataclass(frozen=True)
class FGSM(AttackConfig):
    """Config for :func:`fgsm` (registry name ``fgsm``)."""

    loss: str = "ce"
    norms = NORMS

    def __call__(self, model, x, y, *, eps, norm="linf", target=None, bounds=(0.0, 1.0), generator=None):
        return fgsm(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator, **self.params())
