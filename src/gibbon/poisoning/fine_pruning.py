"""Fine-pruning (Liu, Dolan-Gavitt & Garg 2018, "Fine-Pruning: Defending Against Backdooring
Attacks on Deep Neural Networks", arXiv:1805.12185).

A backdoor lives in neurons that clean inputs leave dormant. Prune the last convolutional layer's
channels in increasing order of their mean activation on clean data, until the clean accuracy
has dropped by ``max_drop`` (the paper's 4%), then fine-tune the pruned network on the clean data
so the remaining neurons recover the accuracy and overwrite what was left of the backdoor.

Pruning uses ``torch.nn.utils.prune`` masks (kept during fine-tuning, made permanent at the
end); the caller's model is copied, never changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune

from gibbon.core.checks import GibbonInputError

MAX_DROP = 0.04


@dataclass(frozen=True)
class FinePruneResult:
    """What :func:`fine_prune` did.

    Attributes:
        model: the pruned and fine-tuned copy.
        pruned: channels of the last conv layer pruned, in pruning order.
        channels: channels that layer has.
        accuracy: clean accuracy on the defender's data before pruning, after pruning, after
            fine-tuning (``before`` / ``pruned`` / ``fine_tuned``).
        curve: ``(channels pruned, clean accuracy)`` after each pruning step.
        pruned_model: with fine-tuning, the pruned copy before it (else None: ``model`` is that).
    """

    model: nn.Module
    pruned: list
    channels: int
    accuracy: dict
    curve: list = field(default_factory=list)
    pruned_model: nn.Module | None = None

    def to_dict(self) -> dict:
        return {"pruned": self.pruned, "channels": self.channels, "accuracy": self.accuracy, "curve": self.curve}


def last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise GibbonInputError(f"{type(model).__name__} has no Conv2d layer; fine-pruning prunes the last "
                               "convolutional layer's channels (use a convolutional model)")
    return convs[-1]


@torch.no_grad()
def channel_activity(model: nn.Module, conv: nn.Conv2d, x: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """Mean ReLU activation of each output channel of ``conv`` over the images ``x``."""
    total = torch.zeros(conv.out_channels, dtype=torch.float64)
    device = next(model.parameters()).device

    def accumulate(_module, _inputs, out) -> None:  # returns None: a hook's return value would replace the output
        total.add_(out.relu().double().mean(dim=(2, 3)).sum(0).cpu())

    handle = conv.register_forward_hook(accumulate)
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size].to(device))
    finally:
        handle.remove()
    return total / max(1, len(x))


def prune_channels(conv: nn.Conv2d, channels) -> None:
    """Zero ``channels`` of ``conv`` (weights and bias) through pruning masks."""
    mask = torch.ones_like(conv.weight)
    mask[list(channels)] = 0
    prune.custom_from_mask(conv, "weight", mask)
    if conv.bias is not None:
        bias_mask = torch.ones_like(conv.bias)
        bias_mask[list(channels)] = 0
        prune.custom_from_mask(conv, "bias", bias_mask)


def _unprune(conv: nn.Conv2d) -> None:
    for name in ("weight", "bias"):
        if prune.is_pruned(conv) and hasattr(conv, name + "_orig"):
            prune.remove(conv, name)


def fine_prune(model: nn.Module, clean, *, max_drop: float = MAX_DROP, fine_tune_epochs: int = 2, lr: float = 1e-4,
               batch_size: int = 128, seed: int = 0, progress: bool = False) -> FinePruneResult:
    """Prune dormant channels of the last conv layer until clean accuracy drops ``max_drop``, then fine-tune.

    Args:
        model: the suspect model (not changed: a copy is pruned).
        clean: the defender's clean :class:`~gibbon.data.dataset.Dataset` (activity, the stopping
            accuracy and fine-tuning all use it; keep the test set apart).
        max_drop: stop pruning once accuracy is this far below the unpruned model's (the channel
            that crossed the line stays pruned, as in the paper).
        fine_tune_epochs: epochs of Adam on ``clean`` after pruning (0: prune only).
    """
    from gibbon.zoo.training import accuracy, fit

    if not 0 < max_drop < 1:
        raise GibbonInputError(f"max_drop must be in (0, 1), got {max_drop}; the paper stops at 0.04")
    if int(fine_tune_epochs) != fine_tune_epochs or fine_tune_epochs < 0:
        raise GibbonInputError(f"fine_tune_epochs must be a whole number >= 0, got {fine_tune_epochs!r}")
    pruned_model = copy.deepcopy(model).eval().requires_grad_(True)  # a frozen model's copy must still train
    conv = last_conv(pruned_model)
    before = accuracy(pruned_model, clean)
    order = channel_activity(pruned_model, conv, clean.x).argsort().tolist()
    pruned, curve, now = [], [], before
    for channel in order[:-1]:  # keep one channel: a layer with none left is no network
        pruned.append(channel)
        _unprune(conv)
        prune_channels(conv, pruned)
        now = accuracy(pruned_model, clean)
        curve.append((len(pruned), now))
        if now <= before - max_drop:
            break
    result_accuracy = {"before": before, "pruned": now}
    snapshot = None
    if fine_tune_epochs:
        snapshot = copy.deepcopy(pruned_model)
        _unprune(last_conv(snapshot))
        fit(pruned_model, clean, epochs=int(fine_tune_epochs), batch_size=batch_size, lr=lr, seed=seed,
            progress=progress)
        result_accuracy["fine_tuned"] = accuracy(pruned_model, clean)
    _unprune(conv)
    return FinePruneResult(pruned_model.eval(), pruned, conv.out_channels, result_accuracy, curve,
                           None if snapshot is None else snapshot.eval())
