"""scikit-learn's 8x8 handwritten digits (1797 images, bundled with scikit-learn, no download).

Splits are fixed: the 1797 images are shuffled once with ``numpy.random.default_rng(0)``;
the first 1197 are ``train``, the next 300 ``val`` and the last 300 ``test``.
Pixel values 0..16 are divided by 16, so inputs lie in ``[0, 1]``; shape ``(N, 1, 8, 8)``.
"""

from __future__ import annotations

import functools

import numpy as np

from gibbon.data._common import DIGIT_CLASSES, Arrays, check_split, readonly

SPLIT_SIZES: dict[str, int] = {"train": 1197, "val": 300, "test": 300}
SOURCE = "sklearn.datasets.load_digits"


@functools.lru_cache(maxsize=1)
def _all() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16))[:, None]
    y = bunch.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    return readonly(x, y, perm)


def load_digits_split(split: str) -> Arrays:
    """One split of the digits data set.

    Args:
        split: ``"train"`` (1197 images), ``"val"`` (300) or ``"test"`` (300).

    Returns:
        The split's :class:`~gibbon.data._common.Arrays`.
    """
    check_split(split)
    x, y, perm = _all()
    start = {"train": 0, "val": SPLIT_SIZES["train"], "test": SPLIT_SIZES["train"] + SPLIT_SIZES["val"]}[split]
    idx = perm[start : start + SPLIT_SIZES[split]]
    return Arrays(x[idx], y[idx], DIGIT_CLASSES, SOURCE)
