"""Momentum iterative FGSM, MI-FGSM (Dong et al. 2018, "Boosting Adversarial Attacks with
Momentum", arXiv:1710.06081).

White-box (and transfer) budget attack in L-infinity or L2: ``g <- decay * g + grad /
||grad||_1``, then a step of ``eps / steps`` along ``ascent(g)`` projected into the ball and the
box. The accumulated direction is more stable, which helps adversarial examples transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import prepare
from gibbon.attacks._loop import ascend
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import get_norm

NORMS = ("linf", "l2")


def mifgsm(model, x, y, *, eps, norm="linf", steps: int = 10, step_size=None, decay: float = 1.0, loss="ce",
           target=None, bounds=(0.0, 1.0), early_stop: bool = False, generator=None) -> torch.Tensor:
    """MI-FGSM.

    Args:
        steps: iterations T (paper: 10). step_size: default ``eps / steps`` (paper's alpha).
        decay: momentum decay factor mu (paper: 1.0). Others as :func:`gibbon.attacks.pgd`.

    Returns:
        ``x_adv`` shaped like ``x``.
    """
    bounds = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS,
                     model=model)
    if steps < 1:
        raise GibbonInputError("mifgsm needs steps >= 1")
    step_size = eps / steps if step_size is None else step_size
    x = x.detach()
    best = ascend(model, x, y, torch.zeros_like(x), norm=get_norm(norm), eps=eps, steps=steps, step_size=step_size,
                  loss=loss, target=target, bounds=bounds, early_stop=early_stop, momentum=decay)
    return best.x_adv


@register("mifgsm")
@dataclass(frozen=True)
class MIFGSM(AttackConfig):
    """Config for :func:`mifgsm` (registry name ``mifgsm``)."""

    steps: int = 10
    step_size: float | None = None
    decay: float = 1.0
    loss: str = "ce"
    early_stop: bool = False
    norms = NORMS

    def __call__(self, model, x, y, *, eps, norm="linf", target=None, bounds=(0.0, 1.0), generator=None):
        return mifgsm(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator, **self.params())
