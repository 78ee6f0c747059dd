"""A user's own data set from a ``.npz`` file, loaded as ``load("npz:PATH")``.

The file holds either arrays ``x`` and ``y`` (then the ``split`` argument only names the
returned :class:`~gibbon.data.Dataset`), or per-split arrays ``x_train``/``y_train``,
``x_val``/``y_val``, ``x_test``/``y_test`` (then ``split`` picks them; any subset of splits
may be present). An optional ``classes`` array of strings names the classes; otherwise
they are ``"0" .. str(max(y))``.

Inputs may be ``(N, H, W)``, ``(N, C, H, W)`` or ``(N, H, W, C)`` with ``C`` in 1 or 3;
``uint8`` pixels are divided by 255, floats must already lie in ``[0, 1]``. Labels are
integers >= 0. The file is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from gibbon.core.checks import GibbonInputError
from gibbon.data._common import Arrays, check_split, to_labels, to_nchw_unit


def load_npz_split(path: str | os.PathLike, split: str) -> Arrays:
    """Load inputs and labels from a ``.npz`` file (format in the module docstring).

    Args:
        path: the ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"``; selects ``x_<split>``/``y_<split>`` when
            the file has per-split arrays.

    Returns:
        The converted :class:`~gibbon.data._common.Arrays`.

    Raises:
        GibbonInputError: missing file or arrays, bad shapes, dtypes or value ranges.
    """
    check_split(split)
    path = Path(path).expanduser()
    if not path.is_file():
        raise GibbonInputError(f"npz file not found: {path}; write one with numpy.savez(path, x=..., y=...)")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if {"x", "y"} <= keys:
                xk, yk = "x", "y"
            elif f"x_{split}" in keys and f"y_{split}" in keys:
                xk, yk = f"x_{split}", f"y_{split}"
            else:
                raise GibbonInputError(
                    f"{path} has arrays {sorted(keys)}; it needs 'x' and 'y', or 'x_{split}' and 'y_{split}' "
                    f"for split {split!r}"
                )
            x, y = f[xk], f[yk]
            names = f["classes"] if "classes" in keys else None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, GibbonInputError):
            raise
        raise GibbonInputError(f"cannot read {path} as .npz without pickle: {e}") from None
    x = to_nchw_unit(x, what=f"{path.name}[{xk!r}]")
    y = to_labels(y, len(x), what=f"{path.name}[{yk!r}]")
    if names is not None:
        classes = tuple(str(c) for c in names.reshape(-1))
        if y.size and y.max() >= len(classes):
            raise GibbonInputError(f"{path.name}: label {y.max()} has no name in 'classes' ({len(classes)} names)")
    else:
        classes = tuple(str(i) for i in range(int(y.max()) + 1 if y.size else 0))
    meta = {"split_ignored": True} if xk == "x" else {}
    return Arrays(x, y, classes, f"npz:{path.resolve()}", meta)
