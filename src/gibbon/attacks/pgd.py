"""Projected gradient descent, PGD (Madry et al. 2018, arXiv:1706.06083).

White-box, budget attack (an eps-ball in L-infinity, L2 or L1), targeted or untargeted. A
uniform random start in the ball, ``steps`` projected steepest-ascent steps on ``loss``, and
``restarts`` that re-attack only the samples still unsolved (as in Madry et al.'s evaluation and
AutoAttack's cascade). Each sample keeps its best iterate; ``early_stop`` drops solved samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import clamp_to_box, default_generator, prepare
from gibbon.attacks._loop import Best, ascend
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import get_norm

NORMS = ("linf", "l2", "l1")


def default_step_size(eps, steps: int):
    """Madry et al.'s rule of thumb: 2.5 * eps / steps, enough to cross the ball and back."""
    return 2.5 * eps / steps


def pgd(model, x, y, *, eps, norm="linf", steps: int = 40, step_size=None, random_start: bool = True,
        restarts: int = 1, loss="ce", target=None, bounds=(0.0, 1.0), early_stop: bool = False,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Projected gradient descent within the eps-ball.

    Args:
        model: callable ``x -> logits``.
        x: inputs ``(B, ...)`` inside ``bounds``. y: true labels ``(B,)``.
        eps: radius of the ball (float or per-sample ``(B,)`` tensor).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        steps: ascent steps per restart. step_size: default ``2.5 * eps / steps``.
        random_start: start uniformly in the ball (else at ``x``).
        restarts: number of runs; each later run attacks only the still-unsolved samples.
        loss: per-sample loss name or function (``"ce"``, ``"margin"``, ...).
        target: target classes ``(B,)`` for a targeted attack, else None.
        bounds: valid input box. early_stop: stop updating a sample once it is adversarial.
        generator: randomness for the start (a fixed seed-0 generator when None).

    Returns:
        ``x_adv`` with the shape, dtype and device of ``x``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
        >>> x_adv = pgd(model, x, y, eps=0.1, steps=5)
        >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
        True
    """
    bounds = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS,
                     model=model)
    if steps < 1 or restarts < 1:
        raise GibbonInputError("pgd needs steps >= 1 and restarts >= 1")
    norm = get_norm(norm)
    generator = default_generator(generator)
    step_size = default_step_size(eps, steps) if step_size is None else step_size
    x = x.detach()
    best = Best.start(clamp_to_box(x, bounds))
    for _ in range(restarts):
        todo = (~best.success).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        sub = lambda v: v[todo] if isinstance(v, torch.Tensor) and v.ndim == 1 else v  # noqa: E731
        x_sub = x[todo]
        delta = norm.sample(x_sub, sub(eps), generator) if random_start else torch.zeros_like(x_sub)
        delta = clamp_to_box(x_sub + delta, bounds) - x_sub
        ascend(model, x_sub, y[todo], delta, norm=norm, eps=sub(eps), steps=steps, step_size=sub(step_size),
               loss=loss, target=sub(target), bounds=bounds, early_stop=early_stop, best=best, idx=todo)
    return best.x_adv


@register("pgd")
@dataclass(frozen=True)
class PGD(AttackConfig):
    """Config for :func:`pgd` (registry name ``pgd``)."""

    steps: int = 40
    step_size: float | None = None
    random_start: bool = True
    restarts: int = 1
    loss: str = "ce"
    early_stop: bool = False
    norms = NORMS
    randomized = True

    def __call__(self, model, x, y, *, eps, norm="linf", target=None, bounds=(0.0, 1.0), generator=None):
        return pgd(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator, **self.params())
