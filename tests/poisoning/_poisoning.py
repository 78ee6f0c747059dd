"""Shared settings and the quick trainer of the poisoning tests."""

from __future__ import annotations

import torch
from _helpers import fit_full_batch

from gibbon import zoo
from gibbon.poisoning.triggers import Trigger

TRIGGER = Trigger(size=2, margin=0)  # 2x2 checkerboard in the 8x8 digits' blank bottom-right corner
TARGET, RATE = 0, 0.05


def train_digits(arch, ds, steps=150, seed=0):
    """Full-batch Adam on a digits-sized set, initialised from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = zoo.build(arch, ds)
        return fit_full_batch(net, ds.x, ds.y, steps=steps, lr=0.01)
