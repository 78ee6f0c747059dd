"""R+FGSM: a random step, then a gradient step (Tramèr et al. 2018, "Ensemble Adversarial
Training: Attacks and Defenses", arXiv:1705.07204, eq. 6).

White-box, single gradient, budget attack. ``x' = x + random_step * ascent(N(0, I))`` (for
L-infinity: ``alpha * sign(N(0, I))``), then ``x_adv = x' + (eps - random_step) * ascent(grad_x'
J(x', y))``, projected into the eps-ball and the box. The random step escapes the sharp curvature
near data points that makes single-step attacks on gradient-masked models look weak.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import clamp_to_box, default_generator, prepare, project_in_box, scale
from gibbon.attacks.fgsm import gradient_step
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import _randn, get_norm

NORMS = ("linf", "l2")


def rfgsm(model, x, y, *, eps, norm="linf", random_step=None, loss="ce", target=None, bounds=(0.0, 1.0),
          generator: torch.Generator | None = None) -> torch.Tensor:
    """R+FGSM.

    Args:
        eps: total budget. random_step: length of the random step (alpha; default ``eps / 2``),
            must not exceed eps. Other arguments as :func:`gibbon.attacks.fgsm`.
        generator: randomness of the random step (a fixed seed-0 generator when None).

    Returns:
        ``x_adv`` shaped like ``x``.
    """
    bounds = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS,
                     model=model)
    norm = get_norm(norm)
    alpha = eps / 2 if random_step is None else random_step
    if isinstance(alpha, (int, float)) and isinstance(eps, (int, float)) and alpha > eps:
        raise GibbonInputError(f"random_step ({alpha}) must not exceed eps ({eps})")
    x = x.detach()
    noise = _randn(x, default_generator(generator))
    x_rand = clamp_to_box(x + scale(norm.ascent(noise), alpha), bounds)
    x_step = x_rand + gradient_step(model, x_rand, y, eps=eps - alpha, norm=norm, loss=loss, target=target, bounds=bounds)
    return x + project_in_box(x, x_step - x, norm, eps, bounds)


@register("rfgsm")
@dataclass(frozen=True)
class RFGSM(AttackConfig):
    """Config for :func:`rfgsm` (registry name ``rfgsm``)."""

    random_step: float | None = None
    loss: str = "ce"
    norms = NORMS
    randomized = True

    def __call__(self, model, x, y, *, eps, norm="linf", target=None, bounds=(0.0, 1.0), generator=None):
        return rfgsm(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator, **self.params())
