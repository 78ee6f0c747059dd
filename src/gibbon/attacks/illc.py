"""Iterative least-likely class method (Kurakin, Goodfellow & Bengio 2017, arXiv:1607.02533).

White-box, L-infinity budget attack: BIM *towards* the class the model finds least likely on
the clean input, ``y_LL = argmin_y p(y | x)``, i.e. steps down ``J(x, y_LL)``. It succeeds (for
scoring) when the prediction is no longer the true label; it aims for the most different class.
"""

from __future__ import annotations

from dataclasses import dataclass

from gibbon.attacks._common import least_likely, prepare
from gibbon.attacks.bim import NORMS, iterative
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.norms import get_norm


def illc(model, x, y, *, eps, norm="linf", steps: int | None = None, step_size: float | None = None, loss="ce",
         target=None, bounds=(0.0, 1.0), early_stop: bool = False, generator=None):
    """Iterative least-likely class method.

    Args:
        target: override the least-likely class (then it is targeted BIM). Others as
            :func:`gibbon.attacks.bim`.

    Returns:
        ``x_adv`` shaped like ``x``.
    """
    bounds = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS,
                     model=model)
    target = least_likely(model, x.detach()) if target is None else target
    return iterative(model, x, y, eps=eps, steps=steps, step_size=step_size, loss=loss, target=target,
                     bounds=bounds, early_stop=early_stop)


@register("illc")
@dataclass(frozen=True)
class ILLC(AttackConfig):
    """Config for :func:`illc` (registry name ``illc``)."""

    steps: int | None = None
    step_size: float | None = None
    loss: str = "ce"
    early_stop: bool = False
    norms = NORMS

    def __call__(self, model, x, y, *, eps, norm="linf", target=None, bounds=(0.0, 1.0), generator=None):
        return illc(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator, **self.params())
