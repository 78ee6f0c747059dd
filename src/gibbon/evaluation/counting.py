"""A model wrapper that counts what an attack costs: rows forwarded and gradients asked for.

Counting happens at the model (house principle 4), so attacks need no bookkeeping and every
attack is measured the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from gibbon.oracles.base import pass_refusal, reported_budget


class CountingModel(nn.Module):
    """Wrap ``model``; count rows forwarded and rows forwarded for a gradient. Outputs unchanged.

    ``forwards`` grows by the batch size of every call. ``gradients`` grows by the batch size of
    every call whose input ``requires_grad`` while autograd is enabled: that is how gradient
    attacks ask for an input gradient. This is an *approximation* of the number of gradient
    computations: it assumes each such forward is followed by exactly one backward pass (true
    for every attack in :mod:`gibbon.attacks`); a forward that builds a graph and never calls
    backward is still counted, and several backward passes through one graph count once.

    Args:
        model: any module mapping ``x -> logits``; its first positional argument is the batch.

    Example:
        >>> counted = CountingModel(nn.Linear(3, 2))
        >>> _ = counted(torch.zeros(4, 3)); _ = counted(torch.zeros(5, 3, requires_grad=True))
        >>> counted.forwards, counted.gradients
        (9, 5)
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.forwards = 0
        self.gradients = 0

    def reset(self) -> None:
        """Set both counters back to zero."""
        self.forwards = 0
        self.gradients = 0

    def forward(self, x, *args, **kwargs):
        rows = int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim > 0 else 1
        self.forwards += rows
        if isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled():
            self.gradients += rows
        return self.model(x, *args, **kwargs)

    # A black-box attack wraps this in an oracle of its own; these two let that oracle see and
    # report to a shared query budget behind the count (an Oracle's max_total, a remote API's).
    def queries_left(self) -> int | None:
        """The wrapped model's shared query budget left (``None``: it has none)."""
        return reported_budget(self.model)

    def note_refusal(self) -> None:
        """Pass a shared-budget refusal on to the wrapped model, if it keeps count of them."""
        pass_refusal(self.model)
