"""The digits MLP the physical-attack tests attack, trained once per session."""

from __future__ import annotations

import pytest
import torch
from _helpers import fit_full_batch

from gibbon import data, zoo


@pytest.fixture(scope="session")
def setting():
    """``(net, train, test)``: mlp-200-200 on the 8x8 digits, 150 full-batch Adam steps."""
    train, test = data.load("digits", "train"), data.load("digits", "test")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = fit_full_batch(zoo.build("mlp-200-200", train), train.x, train.y, steps=150, lr=0.01)
    return net, train, test
