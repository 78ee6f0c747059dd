"""Shared pieces of the loaders: split names, data directories, array conversion."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gibbon.core.checks import GibbonInputError

SPLITS: tuple[str, ...] = ("train", "val", "test")
DIGIT_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
ENV_VAR = "GIBBON_DATA"


@dataclass(frozen=True)
class Arrays:
    """One full split as a loader returns it, before subsetting.

    Attributes:
        x: float32 array ``(N, C, H, W)`` in ``[0, 1]``; may be a read-only cached array.
        y: int64 labels ``(N,)``.
        classes: class names, index = label.
        source: where the arrays came from.
        meta: extra facts for :attr:`Dataset.meta`.
    """

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    source: str
    meta: dict = field(default_factory=dict)


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise a :class:`GibbonInputError`."""
    if split not in SPLITS:
        raise GibbonInputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def data_dirs(root: str | os.PathLike | None, *subdirs: str) -> list[Path]:
    """Candidate directories to search, most specific first.

    ``root`` (when given) then ``$GIBBON_DATA`` (when set), each followed by each of its
    ``subdirs``. Directories that do not exist are left out.

    Args:
        root: directory the user passed, or ``None``.
        *subdirs: sub-directory names to try inside each base, e.g. ``"mnist"``.

    Returns:
        Existing directories, without duplicates.
    """
    bases = [Path(root).expanduser()] if root is not None else []
    if os.environ.get(ENV_VAR):
        bases.append(Path(os.environ[ENV_VAR]).expanduser())
    out: list[Path] = []
    for base in bases:
        for d in (base, *(base / s for s in subdirs)):
            if d.is_dir() and d not in out:
                out.append(d)
    return out


def readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mark arrays read-only (they are shared through a cache) and return them."""
    for a in arrays:
        a.setflags(write=False)
    return arrays


def to_nchw_unit(x: np.ndarray, *, what: str = "x") -> np.ndarray:
    """Convert image arrays to float32 ``(N, C, H, W)`` in ``[0, 1]``.

    Accepted shapes: ``(N, H, W)`` (a channel axis is added), ``(N, C, H, W)`` and
    ``(N, H, W, C)`` with ``C`` in 1 or 3 (channels-first wins when both ends fit).
    ``uint8`` values are divided by 255; floating values must already lie in ``[0, 1]``.

    Args:
        x: the array.
        what: name used in error messages.

    Returns:
        A new float32 C-contiguous array.

    Raises:
        GibbonInputError: unsupported shape or dtype, or float values outside ``[0, 1]``.
    """
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3):
        if x.shape[3] not in (1, 3):
            raise GibbonInputError(
                f"{what} has shape {x.shape}: cannot find a channel axis of size 1 or 3; "
                "store images as N x H x W, N x C x H x W or N x H x W x C"
            )
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 4:
        raise GibbonInputError(
            f"{what} has shape {x.shape}; store images as N x H x W, N x C x H x W or N x H x W x C "
            "(reshape flat vectors to their image size first)"
        )
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, dtype=np.float32) / np.float32(255)
    if not np.issubdtype(x.dtype, np.floating):
        raise GibbonInputError(f"{what} has dtype {x.dtype}; use uint8 pixels (0..255) or floats in [0, 1]")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        raise GibbonInputError(f"{what} contains NaN or infinite values; clean the data first")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise GibbonInputError(
            f"{what} values span [{x.min():.4g}, {x.max():.4g}] but must lie in [0, 1]; "
            "divide 0..255 pixel values by 255 (or store them as uint8), or rescale"
        )
    return x


def to_labels(y: np.ndarray, n: int, *, what: str = "y") -> np.ndarray:
    """Check integer labels ``(N,)`` >= 0 and return them as int64.

    Args:
        y: the labels.
        n: expected number of labels (the number of inputs).
        what: name used in error messages.

    Raises:
        GibbonInputError: wrong shape, non-integer dtype, or negative labels.
    """
    if y.ndim != 1 or y.shape[0] != n:
        raise GibbonInputError(f"{what} must have shape ({n},) to match the inputs, got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise GibbonInputError(f"{what} has dtype {y.dtype}; labels must be integers 0..K-1")
    if y.size and y.min() < 0:
        raise GibbonInputError(f"{what} contains negative labels; labels must be integers 0..K-1")
    return y.astype(np.int64)
