"""BPDA without touching the model's code: straight-through gradients for the operations that
have none (Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of
Security", arXiv:1802.00420, section 4.1; the straight-through estimator of Bengio, Leonard &
Courville 2013, arXiv:1308.3432).

Threat model: white-box, any norm and attack; only the gradient the attack sees changes.
:class:`~gibbon.defenses.bpda.BPDA` needs the defense written as ``InputTransformed(t, model)``.
A user's model usually is not: its forward thresholds (``(x > 0.5).float()``), rounds
(``torch.round(x * 15) / 15``), takes a sign, or detaches. :class:`StraightThrough` runs such a
forward under a :class:`torch.overrides.TorchFunctionMode` that keeps every value exactly as it
is and gives these operations an identity backward:

* rounding: ``round``, ``floor``, ``ceil``, ``trunc``, ``sign``, ``heaviside``: the gradient
  of ``x``;
* comparisons ``a > b``, ``a >= b`` (and ``<``, ``<=``): still a bool tensor, remembered with the
  surrogate ``a - b`` (``b - a``); converting it to a float (``.float()``, ``.to(dtype)``,
  ``.type_as``) or using it in ``torch.where`` passes the surrogate's gradient on (thermometer
  codes and random thresholds included);
* ``detach``: a copy that keeps the gradient; ``.numpy()`` still detaches first, so a NumPy
  round trip stays a cut graph (nothing here can see through it: use a gradient-free attack or a
  distilled surrogate).

The result is an approximation of the gradient, never of the model: attack through
:class:`StraightThrough`, score on the model itself.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

T = torch.Tensor
ROUNDING = {torch.round, T.round, torch.floor, T.floor, torch.ceil, T.ceil, torch.trunc, T.trunc, torch.fix, T.fix,
            torch.sign, T.sign, torch.sgn, T.sgn, torch.heaviside, T.heaviside}
INCREASING = {torch.gt, T.gt, T.__gt__, torch.ge, T.ge, T.__ge__, torch.greater, T.greater, torch.greater_equal,
              T.greater_equal}
DECREASING = {torch.lt, T.lt, T.__lt__, torch.le, T.le, T.__le__, torch.less, T.less, torch.less_equal,
              T.less_equal}
CONVERSIONS = {T.float, T.double, T.half, T.bfloat16, T.to, T.type, T.type_as}


def _passes_gradient(value) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad


def _through(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Exactly ``value``; the gradient of ``surrogate`` (broadcast to ``value``'s shape)."""
    surrogate = surrogate.to(value.dtype)
    return value.detach() + (surrogate - surrogate.detach()).expand_as(value)


class StraightThroughMode(TorchFunctionMode):
    """The torch-function mode behind :class:`StraightThrough`; ``replaced`` counts its rewrites."""

    def __init__(self):
        super().__init__()
        self.surrogates = WeakIdKeyDictionary()  # bool comparison result -> its float surrogate
        self.replaced: dict[str, int] = {}

    def _count(self, func) -> None:
        name = getattr(func, "__name__", str(func))
        self.replaced[name] = self.replaced.get(name, 0) + 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is T.numpy and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            return args[0].detach().numpy(*args[1:], **kwargs)  # a NumPy round trip stays cut, as without the mode
        out = func(*args, **kwargs)  # the value is always the model's own
        if func in ROUNDING and _passes_gradient(args[0]) and isinstance(out, torch.Tensor) and out.is_floating_point():
            self._count(func)
            return _through(out, args[0])
        if func in INCREASING or func in DECREASING:
            a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other")
            if _passes_gradient(a) or _passes_gradient(b):
                diff = (a - b) if func in INCREASING else (b - a)
                if isinstance(diff, torch.Tensor) and diff.is_floating_point():
                    self.surrogates[out] = diff
            return out
        if func in CONVERSIONS and isinstance(out, torch.Tensor) and out.is_floating_point():
            source = args[0]
            if isinstance(source, torch.Tensor) and source.dtype == torch.bool and source in self.surrogates:
                self._count(func)
                return _through(out, self.surrogates[source])
            return out
        if func is torch.where and len(args) == 3 and isinstance(args[0], torch.Tensor) and args[0] in self.surrogates:
            high, low = args[1], args[2]
            step = (high - low) if isinstance(high, torch.Tensor) or isinstance(low, torch.Tensor) else high - low
            self._count(func)
            return out + (self.surrogates[args[0]] - self.surrogates[args[0]].detach()) * step
        if func is T.detach and _passes_gradient(args[0]):
            self._count(func)
            return args[0].clone()
        return out


class StraightThrough(nn.Module):
    """``model`` with straight-through gradients for its non-differentiable operations.

    Args:
        model: any ``x -> scores`` callable; shared, never modified.

    Attributes:
        replaced: after a call, how many times each operation got an identity backward.

    Example:
        >>> class Binarized(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        ...     def forward(self, x):
        ...         return self.net((x > 0.5).float())
        >>> model, x = Binarized(), torch.rand(2, 1, 2, 2, requires_grad=True)
        >>> bool(torch.equal(StraightThrough(model)(x), model(x)))  # the same forward pass
        True
        >>> bool(torch.autograd.grad(StraightThrough(model)(x).sum(), x)[0].abs().sum() > 0)
        True

    References:
        Athalye, Carlini & Wagner (2018), arXiv:1802.00420, section 4.1.
    """

    def __init__(self, model):
        super().__init__()
        if isinstance(model, nn.Module):
            self.model = model
        else:
            object.__setattr__(self, "_callable", model)
        self.replaced: dict[str, int] = {}

    def forward(self, x: torch.Tensor):
        mode = StraightThroughMode()
        inner = self.model if "model" in self._modules else self._callable
        with mode:
            out = inner(x)
        for name, count in mode.replaced.items():
            self.replaced[name] = self.replaced.get(name, 0) + count
        return out
