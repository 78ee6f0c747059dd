"""Class filtering and sample subsets applied by :func:`gibbon.data.load` (numpy, pure functions)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from gibbon.core.checks import GibbonInputError


def class_indices(classes: Sequence[int | str], names: tuple[str, ...]) -> list[int]:
    """Resolve a user's class selection to label indices.

    Args:
        classes: labels (ints) or class names (strings), e.g. ``[3, 7]`` or ``["cat", "dog"]``.
        names: the data set's class names, index = label.

    Returns:
        The selected labels, in the given order.

    Raises:
        GibbonInputError: empty selection, duplicates, or unknown labels/names.
    """
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence) or len(classes) == 0:
        raise GibbonInputError(f"classes must be a non-empty list of labels or names, e.g. [3, 7]; got {classes!r}")
    out = []
    for c in classes:
        if isinstance(c, str) and c in names:
            out.append(names.index(c))
        elif isinstance(c, numbers.Integral) and not isinstance(c, bool) and 0 <= int(c) < len(names):
            out.append(int(c))
        else:
            raise GibbonInputError(
                f"unknown class {c!r}; use labels 0..{len(names) - 1} or names {', '.join(names)}"
            )
    if len(set(out)) != len(out):
        raise GibbonInputError(f"classes lists a class twice: {list(classes)!r}")
    return out


def select_classes(y: np.ndarray, labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Keep only samples of ``labels`` and relabel them ``0..k-1`` in the given order.

    Args:
        y: int labels ``(N,)``.
        labels: labels to keep, e.g. ``[3, 7]`` (3 becomes 0, 7 becomes 1).

    Returns:
        ``(rows, new_y)``: indices of the kept samples (ascending) and their new labels.
    """
    rows = np.flatnonzero(np.isin(y, labels))
    lookup = np.full(int(max(int(y.max(initial=0)), *labels)) + 1, -1, dtype=np.int64)
    lookup[list(labels)] = np.arange(len(labels))
    return rows, lookup[y[rows]]


def pick_rows(total: int, n: int | None, seed: int | None) -> np.ndarray | None:
    """Rows of a subset of ``n`` out of ``total`` samples.

    Args:
        total: number of samples available.
        n: subset size; ``None`` keeps everything.
        seed: ``None`` takes the first ``n``; an int draws a random ``n``-subset with
            :func:`numpy.random.default_rng` (returned in ascending order).

    Returns:
        Ascending row indices, or ``None`` for "all rows in order".

    Raises:
        GibbonInputError: ``n`` is not a positive int, or exceeds ``total``.
    """
    if n is None:
        return None
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n <= 0:
        raise GibbonInputError(f"n must be a positive integer (or None for all samples), got {n!r}")
    if n > total:
        raise GibbonInputError(f"n={n} but only {total} samples are available; pass n <= {total} or n=None")
    if seed is None:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(total, size=int(n), replace=False))
