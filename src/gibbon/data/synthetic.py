"""Synthetic, linearly separable Gaussian blobs shaped like small images.

Each class has a fixed mean image (drawn once with seed 1234, pixel values in
``[0.15, 0.85]``); samples add Gaussian noise (std 0.1) and are clipped to ``[0, 1]``.
Splits use fixed seeds, so every call returns the same data. Defaults: 10 classes,
shape ``(1, 8, 8)``, 2000 train / 500 val / 500 test samples, classes balanced.
A linear classifier separates the classes (near) perfectly.
"""

from __future__ import annotations

import numpy as np

from gibbon.data._common import Arrays, check_split

SPLIT_SIZES: dict[str, int] = {"train": 2000, "val": 500, "test": 500}
_SPLIT_SEEDS = {"train": 1, "val": 2, "test": 3}
_MEAN_SEED = 1234


def make_blobs(
    n: int,
    *,
    num_classes: int = 10,
    shape: tuple[int, int, int] = (1, 8, 8),
    noise: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` blob samples around fixed class means.

    Args:
        n: number of samples (labels cycle through the classes, then are shuffled).
        num_classes: number of classes.
        shape: ``(C, H, W)`` of one input.
        noise: standard deviation of the Gaussian noise.
        seed: seed for the samples (the class means depend only on ``num_classes`` and ``shape``).

    Returns:
        ``(x, y)``: float32 ``(n, C, H, W)`` in ``[0, 1]`` and int64 ``(n,)``.
    """
    dim = int(np.prod(shape))
    means = np.random.default_rng(_MEAN_SEED).uniform(0.15, 0.85, size=(num_classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    x = means[y] + noise * rng.standard_normal((n, dim))
    return np.clip(x, 0.0, 1.0).astype(np.float32).reshape(n, *shape), y


def load_synthetic_split(split: str) -> Arrays:
    """One split of the default synthetic data set (see the module docstring).

    Args:
        split: ``"train"`` (2000 samples), ``"val"`` (500) or ``"test"`` (500).

    Returns:
        The split's :class:`~gibbon.data._common.Arrays`.
    """
    check_split(split)
    x, y = make_blobs(SPLIT_SIZES[split], seed=_SPLIT_SEEDS[split])
    return Arrays(x, y, tuple(str(i) for i in range(10)), f"synthetic:gaussian-blobs(seed={_SPLIT_SEEDS[split]})")
