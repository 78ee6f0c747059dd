"""The inner maximisation shared by the adversarial-training objectives.

Training objectives craft their adversarial examples with these few lines rather than with the
registered attacks: a training step wants the last iterate (no best-so-far bookkeeping, no
early stop, no per-call checks), and it may run the model in train or eval mode on purpose.
Gradients are taken with ``torch.autograd.grad`` w.r.t. the perturbation only, so no
``param.grad`` is filled before the caller's own ``backward``.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError


@contextlib.contextmanager
def attack_mode(model: torch.nn.Module, eval_mode: bool):
    """Run the inner attack in eval mode (BatchNorm running statistics, no dropout) when
    ``eval_mode``, and give the model back in the mode it was in."""
    was_training = model.training
    if eval_mode:
        model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def input_gradient(model, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable | None = None) -> torch.Tensor:
    """Gradient of ``loss_fn(model(x), y)`` (default: summed cross-entropy) w.r.t. ``x`` only."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = loss_fn(logits, y) if loss_fn is not None else F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


CRAFT_LABELS = ("true", "predicted")


def check_craft_labels(craft_labels: str, name: str) -> None:
    if craft_labels not in CRAFT_LABELS:
        raise GibbonInputError(f"{name}: craft_labels must be one of {', '.join(CRAFT_LABELS)}, got {craft_labels!r}")


def crafting_loss(craft_labels: str) -> Callable | None:
    """The loss an FGSM example ascends: cross-entropy on the true labels (``"true"``, None here),
    or (``"predicted"``) on the crafting model's own predictions from the same forward pass. The
    latter avoids *label leaking* (Kurakin, Goodfellow & Bengio 2017, arXiv:1611.01236): with
    true labels the single-step perturbation carries the label, and an FGSM-trained model learns
    to read it back. Tramer et al.'s code crafts this way."""
    if craft_labels == "true":
        return None
    return lambda logits, _: F.cross_entropy(logits, logits.detach().argmax(1), reduction="sum")


def fgsm_example(model, x: torch.Tensor, y: torch.Tensor, eps: float, bounds,
                 loss_fn: Callable | None = None) -> torch.Tensor:
    """``x + eps * sign(grad_x CE)``, clipped into ``bounds`` and detached (Goodfellow et al. 2015);
    ``loss_fn(logits, y)`` replaces the summed cross-entropy."""
    grad = input_gradient(model, x, y, loss_fn)
    return (x.detach() + eps * grad.sign()).clamp(float(bounds[0]), float(bounds[1]))


def pgd_example(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, step_size: float, bounds,
                random_start: bool = True, loss_fn: Callable | None = None,
                start: torch.Tensor | None = None) -> torch.Tensor:
    """L-infinity PGD's last iterate (Madry et al. 2018), detached.

    ``start`` (a point inside the ball) replaces the uniform random start; ``loss_fn(logits, y)``
    replaces the summed cross-entropy (TRADES passes its KL term, with the clean
    probabilities as ``y``).
    """
    low, high = float(bounds[0]), float(bounds[1])
    x = x.detach()
    if start is not None:
        x_adv = start.detach()
    elif random_start:
        x_adv = x + torch.empty_like(x).uniform_(-eps, eps)
    else:
        x_adv = x.clone()
    x_adv = x_adv.clamp(low, high)
    for _ in range(steps):
        grad = input_gradient(model, x_adv, y, loss_fn)
        x_adv = x_adv + step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(low, high)
    return x_adv.detach()


def clean_and_adversarial_loss(model, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, clean_weight: float):
    """Goodfellow et al.'s mixture ``a * CE(x) + (1 - a) * CE(x_adv)``; returns ``(loss, clean_logits)``."""
    logits = model(x)
    loss = clean_weight * F.cross_entropy(logits, y) + (1 - clean_weight) * F.cross_entropy(model(x_adv), y)
    return loss, logits
