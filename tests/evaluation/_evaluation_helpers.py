"""Test-only attacks and models for the evaluation tests (never registered under real names)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gibbon.attacks.registry import AttackConfig
from gibbon.core.losses import get_loss
from gibbon.core.norms import get_norm


def input_gradient(model, x, labels, loss="ce"):
    x_var = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        values = get_loss(loss)(model(x_var), labels)
        (grad,) = torch.autograd.grad(values.sum(), x_var)
    return grad


@dataclass(frozen=True)
class StepAttack(AttackConfig):
    """One signed-gradient step of size eps (FGSM for linf), ascending ``loss``."""

    name = "test-step"
    loss: str = "ce"

    def __call__(self, model, x, y, *, eps, norm, bounds, target=None, generator=None):
        if target is None:
            direction = get_norm(norm).ascent(input_gradient(model, x, y, self.loss))
        else:
            direction = -get_norm(norm).ascent(input_gradient(model, x, target, self.loss))
        return (x + eps * direction).clamp(*bounds).detach()


@dataclass(frozen=True)
class NoOpAttack(AttackConfig):
    name = "test-noop"

    def __call__(self, model, x, y, *, eps, norm, bounds, target=None, generator=None):
        return x.clone()


@dataclass(frozen=True)
class NoiseAttack(AttackConfig):
    """Random signs of size eps drawn from ``generator`` (a randomized attack)."""

    name = "test-noise"
    randomized = True

    def __call__(self, model, x, y, *, eps, norm, bounds, target=None, generator=None):
        u = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
        return (x + eps * torch.sign(u - 0.5)).clamp(*bounds)


@dataclass(frozen=True)
class LineSearchAttack(AttackConfig):
    """Minimal attack: the smallest t on a grid with x + t * sign(grad) adversarial (eps ignored)."""

    name = "test-linesearch"
    norms = ("linf",)
    minimal = True
    steps: int = 40
    max_distance: float = 1.0

    def __call__(self, model, x, y, *, eps, norm, bounds, target=None, generator=None):
        direction = input_gradient(model, x, y).sign()
        best = (x + self.max_distance * direction).clamp(*bounds)
        found = torch.zeros(len(x), dtype=torch.bool)
        with torch.no_grad():
            for t in torch.linspace(0, self.max_distance, self.steps + 1).tolist():
                candidate = (x + t * direction).clamp(*bounds)
                newly = (model(candidate).argmax(1) != y) & ~found
                best[newly] = candidate[newly]
                found |= newly
        return best.detach()


@dataclass(frozen=True)
class L0OnlyAttack(NoOpAttack):
    name = "test-jsma"
    norms = ("l0",)


@dataclass(frozen=True)
class OutOfBallAttack(AttackConfig):
    """A buggy attack stepping 2 * eps: the evaluator must not count its outputs."""

    name = "test-outofball"

    def __call__(self, model, x, y, *, eps, norm, bounds, target=None, generator=None):
        direction = input_gradient(model, x, y).sign()
        return (x + 2 * eps * direction).clamp(*bounds).detach()


class Spy:
    """A plain-callable attack recording what it was given (and doing nothing)."""

    name = "test-spy"

    def __init__(self):
        self.calls = []

    def __call__(self, model, x, y, *, eps, norm, bounds, target=None, generator=None):
        self.calls.append({"x": x.clone(), "y": y.clone(), "eps": eps, "norm": norm, "bounds": bounds,
                           "target": None if target is None else target.clone(),
                           "seed": None if generator is None else generator.initial_seed()})
        return x.clone()


class NoisyModel(nn.Module):
    """A randomized model: large uniform noise on the logits at every call (even in eval mode)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out + 20 * torch.rand(out.shape, device=out.device)


class MCDropoutModel(nn.Module):
    """Dropout that stays on in eval mode (Monte-Carlo dropout)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(F.dropout(x, p=0.5, training=True))


class QuantizedModel(nn.Module):
    """Inputs rounded to 4 levels: the input gradient is zero almost everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 3) / 3)
