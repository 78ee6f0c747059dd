"""What counts as adversarial: a changed prediction (untargeted) or the target class reached."""

from __future__ import annotations

import torch


def is_adversarial(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample success ``bool[B]``: ``argmax != y`` untargeted, ``argmax == target`` targeted.

    Example:
        >>> is_adversarial(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 0]))
        tensor([ True, False])
    """
    pred = logits.argmax(dim=1)
    return pred == target if target is not None else pred != y
