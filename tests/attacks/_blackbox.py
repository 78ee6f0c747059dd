"""Shared pieces of the decision-based attack tests: a model that refuses gradients, one thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Thousands of small forward passes: on a loaded 2-core machine two threads run them 5-10x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class BlackBox(torch.nn.Module):
    """Fails the test if it is ever asked for a gradient (or even run with autograd on)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        assert not x.requires_grad and not torch.is_grad_enabled(), "the attack asked for a gradient"
        return self.model(x)
