"""Small helpers shared by test modules (imported as ``from _helpers import ...``)."""

from __future__ import annotations

import sys

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
