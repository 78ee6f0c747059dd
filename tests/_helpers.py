"""Small helpers shared by test modules (imported as ``from _helpers import ...``)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F


def fit_full_batch(net: torch.nn.Module, x, y, *, steps: int = 150, lr: float = 0.01) -> torch.nn.Module:
    """Full-batch Adam on a digits-sized set (under a second); returns the net frozen in eval mode."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval().requires_grad_(False)


def run_cli(monkeypatch, *args) -> int:
    """Run ``gibbon ARGS`` in-process; returns the exit code."""
    from gibbon.cli import main

    monkeypatch.setattr(sys, "argv", ["gibbon", *args])
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def digits_mlp(seed: int = 0) -> torch.nn.Module:
    """A fresh 64-128-10 ReLU MLP for 8x8 digits, its weights seeded without touching the global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                   torch.nn.Linear(128, 10))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for the module: tiny models run 5-10x slower when OpenMP threads fight
    a loaded 2-core machine. Import it into a test module or conftest to switch it on there."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_cifar(root, rows=40, seed=0):
    """Standard python batches: 5 training batches, a test batch and batches.meta, with images whose
    mean brightness follows the label (so a linear model can learn them)."""
    import pickle

    import numpy as np

    from gibbon.data.cifar10 import CLASSES, DIRNAME

    rng = np.random.default_rng(seed)
    folder = root / DIRNAME
    folder.mkdir(parents=True)

    def batch(n):
        labels = rng.integers(0, 10, n)
        images = np.clip(rng.normal(25 * labels[:, None], 20, (n, 3072)), 0, 255).astype(np.uint8)
        return {b"batch_label": b"test", b"labels": labels.tolist(), b"data": images,
                b"filenames": [b"%d.png" % i for i in range(n)]}

    for i in range(5):
        (folder / f"data_batch_{i + 1}").write_bytes(pickle.dumps(batch(rows), protocol=4))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(rows), protocol=4))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in CLASSES]}, protocol=4))
    return root
