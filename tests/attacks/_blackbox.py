"""Shared pieces of the decision-based attack tests: a model that refuses gradients, one thread."""

from __future__ import annotations

import pytest
import torch
from _helpers import one_thread  # noqa: F401 - re-exported: autouse where imported

from gibbon.oracles import Oracle


class BlackBox(torch.nn.Module):
    """Fails the test if it is ever asked for a gradient (or even run with autograd on)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        assert not x.requires_grad and not torch.is_grad_enabled(), "the attack asked for a gradient"
        return self.model(x)


@pytest.fixture(scope="module")
def hundred(digits):
    """The first 100 digits test images and labels."""
    _, _, x, y = digits
    return x[:100], y[:100]


def run_counted(attack, model, x, y, *, seed=0, **kw):
    """Run a decision-based ``attack`` on ``model`` seen through a gradient-refusing, per-sample
    counting :class:`Oracle` with no budget of its own; returns ``(x_adv, oracle)``."""
    oracle = Oracle(BlackBox(model), n=len(x))
    return attack(oracle, x, y, generator=torch.Generator().manual_seed(seed), **kw), oracle
