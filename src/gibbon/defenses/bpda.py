"""Backward Pass Differentiable Approximation, BPDA (Athalye, Carlini & Wagner 2018, "Obfuscated
Gradients Give a False Sense of Security", arXiv:1802.00420, section 4.1).

Threat model: white-box, any norm and attack: BPDA only changes the gradient the attack sees.
A defense ``model(t(x))`` whose front end ``t`` is non-differentiable (rounding, JPEG) or has a
useless gradient is attacked by running ``t`` exactly in the forward pass and replacing it with
a differentiable ``g`` with ``g(x) ~ t(x)`` in the backward pass. The default ``g`` is the
identity (the "straight-through" estimator, section 4.1.1: the gradient of ``model(t(x))`` is
taken to be the model's gradient at ``t(x)``), right whenever ``t(x) ~ x``.

Like :class:`~gibbon.defenses.eot.EOT`, this is a model wrapper; attacks do not know about it::

    defended = InputTransformed(BitDepthReduction(1), net)
    x_adv = PGD(steps=40)(BPDA(defended), x, y, eps=0.3)   # then score x_adv on ``defended``

Any other front end works once it is written as ``InputTransformed(front_end, rest_of_model)``
(or any module with ``.transform`` and ``.model``); :func:`straight_through` is the bare
operation for pipelines of another shape.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError


def straight_through(transform: Callable, x: torch.Tensor, backward: Callable | None = None) -> torch.Tensor:
    """``transform(x)`` in the forward pass; the gradient of ``backward(x)`` (default identity).

    The value is ``t + (g - g.detach())`` with ``t = transform(x)`` detached: exactly ``t``,
    since ``g - g`` is exactly 0, while autograd sees only ``g``.

    Args:
        transform: any ``x -> tensor`` of ``x``'s shape, run without gradient tracking.
        x: the input. backward: a differentiable surrogate ``g(x) ~ transform(x)``.

    Example:
        >>> from gibbon.defenses.transforms import BitDepthReduction
        >>> x = torch.tensor([0.2, 0.7], requires_grad=True)
        >>> out = straight_through(BitDepthReduction(1), x.view(1, 1, 1, 2))
        >>> (out.sum() * 3).backward(); out.detach().flatten(), x.grad
        (tensor([0., 1.]), tensor([3., 3.]))
    """
    with torch.no_grad():
        value = transform(x)
    if value.shape != x.shape:
        raise GibbonInputError(
            f"straight-through needs a transform that keeps the shape ({tuple(x.shape)} -> {tuple(value.shape)}); "
            "pass backward= a differentiable surrogate with the transform's output shape")
    surrogate = x if backward is None else backward(x)
    if surrogate.shape != value.shape:
        raise GibbonInputError(f"backward(x) has shape {tuple(surrogate.shape)}, the transform {tuple(value.shape)}")
    return value.detach() + (surrogate - surrogate.detach())


class BPDA(nn.Module):
    """``defended.model(defended.transform(x))`` with the transform's gradient replaced.

    Args:
        defended: an :class:`~gibbon.defenses.transforms.InputTransformed` (or any module with
            ``.transform`` and ``.model``). It is shared, not copied, and never modified.
        backward: differentiable surrogate ``g(x) ~ transform(x)``; default identity.

    Example:
        >>> from gibbon.defenses.transforms import BitDepthReduction, InputTransformed
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> defended = InputTransformed(BitDepthReduction(1), net)
        >>> x = torch.rand(2, 1, 2, 2, requires_grad=True)
        >>> bool(torch.equal(BPDA(defended)(x), defended(x)))  # same forward pass
        True
        >>> bool(torch.autograd.grad(BPDA(defended)(x).sum(), x)[0].abs().sum() > 0)  # a useful gradient
        True

    References:
        Athalye, Carlini & Wagner (2018), arXiv:1802.00420, section 4.1.
    """

    def __init__(self, defended, backward: Callable | None = None):
        super().__init__()
        if not (hasattr(defended, "transform") and hasattr(defended, "model")):
            raise GibbonInputError(
                f"BPDA needs the defended model as InputTransformed(transform, model), got {type(defended).__name__}; "
                "wrap your front end: BPDA(InputTransformed(front_end, classifier))")
        if backward is not None and not callable(backward):
            raise GibbonInputError("backward must be a differentiable callable x -> approximation of transform(x)")
        self.defended, self.backward_fn = defended, backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.defended.model(straight_through(self.defended.transform, x, self.backward_fn))

    def extra_repr(self) -> str:
        return "backward=identity" if self.backward_fn is None else f"backward={self.backward_fn!r}"
