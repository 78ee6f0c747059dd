"""Digits-sized poisoning fixtures: a BadNets-poisoned training set and the nets trained on it."""

from __future__ import annotations

import pytest
import torch
from _helpers import fit_full_batch
from torch import nn
from _poisoning import RATE, TARGET, TRIGGER, train_digits

from gibbon import data
from gibbon.poisoning.backdoor import badnets_poison


@pytest.fixture(scope="session")
def digit_splits():
    return data.load("digits", "train"), data.load("digits", "val"), data.load("digits", "test")


@pytest.fixture(scope="session")
def poisoned_digits(digit_splits):
    return badnets_poison(digit_splits[0], TRIGGER, TARGET, RATE, seed=0)


@pytest.fixture(scope="session")
def backdoored_mlp(poisoned_digits):
    return train_digits("mlp-200-200", poisoned_digits.dataset)


@pytest.fixture(scope="session")
def clean_mlp(digit_splits):
    return train_digits("mlp-200-200", digit_splits[0])


@pytest.fixture(scope="session")
def backdoored_convnet(poisoned_digits):
    """Two 3x3 conv layers (8, 16 channels) and a linear head: LeNet-like, fast at 8x8."""
    ds = poisoned_digits.dataset
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                            nn.Flatten(), nn.Linear(16 * 64, 64), nn.ReLU(), nn.Linear(64, 10))
        return fit_full_batch(net, ds.x, ds.y, steps=150, lr=0.005)
