"""Shared fixtures: small models trained on real data (scikit-learn's 8x8 digits), cached per session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits


def _digits_tensors():
    bunch = load_digits()
    x = torch.tensor(bunch.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[perm], y[perm]


def train_quick(model: torch.nn.Module, x, y, *, steps=300, lr=1e-2, seed=0) -> torch.nn.Module:
    """Full-batch Adam: a few seconds on 2 cores for the digits-sized models used in tests."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


@pytest.fixture(scope="session")
def digits():
    """(x_train, y_train, x_test, y_test): 1497 / 300 split of the 1797 digits, x in [0, 1]."""
    x, y = _digits_tensors()
    return x[:1497], y[:1497], x[1497:], y[1497:]


@pytest.fixture(scope="session")
def digits_mlp(digits):
    """A 64-64-10 ReLU MLP trained on digits (about 97% test accuracy)."""
    x, y, _, _ = digits
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    return train_quick(model, x, y)


@pytest.fixture
def rng_seed():
    return np.random.default_rng(0)
