"""Basic iterative method, BIM / I-FGSM (Kurakin, Goodfellow & Bengio 2017, "Adversarial
examples in the physical world", arXiv:1607.02533).

White-box, budget attack in L-infinity: FGSM steps of ``step_size`` (1/255 of the input range),
each clipped back into the eps-ball and the box, no random start. Kurakin et al.'s schedule:
``steps = ceil(min(eps*255 + 4, 1.25 * eps*255))`` with eps measured in 1/255 of the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gibbon.attacks._common import prepare
from gibbon.attacks._loop import ascend
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.norms import get_norm

NORMS = ("linf",)


def kurakin_schedule(eps: float, bounds=(0.0, 1.0)) -> tuple[int, float]:
    """``(steps, step_size)`` of Kurakin et al. 2017, section 2.1, for eps in input units.

    Example:
        >>> kurakin_schedule(0.3)
        (81, 0.00392156862745098)
    """
    width = bounds[1] - bounds[0]
    eps_255 = float(eps) / width * 255
    steps = max(1, math.ceil(min(eps_255 + 4, 1.25 * eps_255)))
    return steps, width / 255


def iterative(model, x, y, *, eps, steps, step_size, loss, target, bounds, early_stop, norm="linf") -> torch.Tensor:
    """The BIM loop from ``x`` (shared with the least-likely class method)."""
    if steps is None or step_size is None:
        default_steps, default_size = kurakin_schedule(float(torch.as_tensor(eps).max()), bounds)
        steps = default_steps if steps is None else steps
        step_size = default_size if step_size is None else step_size
    x = x.detach()
    best = ascend(model, x, y, torch.zeros_like(x), norm=get_norm(norm), eps=eps, steps=steps, step_size=step_size,
                  loss=loss, target=target, bounds=bounds, early_stop=early_stop)
    return best.x_adv


def bim(model, x, y, *, eps, norm="linf", steps: int | None = None, step_size: float | None = None, loss="ce",
        target=None, bounds=(0.0, 1.0), early_stop: bool = False, generator=None) -> torch.Tensor:
    """Basic iterative method (I-FGSM).

    Args:
        eps: L-infinity budget. steps, step_size: default Kurakin's schedule for ``eps``.
        loss, target, bounds, early_stop: as :func:`gibbon.attacks.pgd`. generator: unused.

    Returns:
        ``x_adv`` shaped like ``x``.
    """
    bounds = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS,
                     model=model)
    return iterative(model, x, y, eps=eps, steps=steps, step_size=step_size, loss=loss, target=target,
                     bounds=bounds, early_stop=early_stop)


@register("bim")
@dataclass(frozen=True)
class BIM(AttackConfig):
    """Config for :func:`bim` (registry name ``bim``)."""

    steps: int | None = None
    step_size: float | None = None
    loss: str = "ce"
    early_stop: bool = False
    norms = NORMS

    def __call__(self, model, x, y, *, eps, norm="linf", target=None, bounds=(0.0, 1.0), generator=None):
        return bim(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator, **self.params())
