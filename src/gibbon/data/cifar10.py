"""CIFAR-10 from the standard python batches (``cifar-10-batches-py``), inputs ``(N, 3, 32, 32)``.

Nothing is downloaded: get the "CIFAR-10 python version" archive from
https://www.cs.toronto.edu/~kriz/cifar.html, unpack it, and point ``root`` or
``$GIBBON_DATA`` at the ``cifar-10-batches-py`` directory or at its parent.

Splits: ``train`` is the first 45 000 images of ``data_batch_1`` .. ``data_batch_5`` (in
that order), ``val`` the last 5 000, ``test`` is ``test_batch``. (With smaller batch files,
``val`` is the last tenth of the training images.) Pixels are divided by 255. The batch
pickles are read with the restricted :class:`~gibbon.data.safe_pickle.ArrayUnpickler`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from gibbon.core.checks import GibbonInputError
from gibbon.data._common import Arrays, check_split, data_dirs, readonly
from gibbon.data.safe_pickle import load_arrays_pickle

CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
DIRNAME = "cifar-10-batches-py"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def find_cifar10_dir(root: str | os.PathLike | None = None) -> Path:
    """The directory holding the CIFAR-10 python batches.

    Args:
        root: directory to search first (itself and its ``cifar-10-batches-py`` child), then
            ``$GIBBON_DATA`` the same way.

    Raises:
        GibbonInputError: no candidate holds all six batch files.
    """
    searched = data_dirs(root, DIRNAME)
    for d in searched:
        if all((d / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH)):
            return d
    where = ", ".join(str(d) for d in searched) or "nowhere (no root given and GIBBON_DATA is not set)"
    raise GibbonInputError(
        f"CIFAR-10 not found (searched {where}). Download the python version of CIFAR-10 from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, unpack it, and set GIBBON_DATA (or pass root=) "
        f"to the directory containing {DIRNAME}/"
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = load_arrays_pickle(f, encoding="bytes")
    try:
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    except (TypeError, KeyError):
        raise GibbonInputError(f"{path} is not a CIFAR-10 batch (no b'data'/b'labels' entries)") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise GibbonInputError(
            f"{path}: expected uint8 data of shape (N, 3072) and N labels, got {data.shape} {data.dtype}"
        )
    return data, labels


def _class_names(directory: Path) -> tuple[str, ...]:
    meta = directory / "batches.meta"
    if not meta.is_file():
        return CLASSES
    with open(meta, "rb") as f:
        names = load_arrays_pickle(f, encoding="bytes").get(b"label_names", [])
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return names if len(names) == len(CLASSES) else CLASSES


@functools.lru_cache(maxsize=1)
def _read_dir(directory: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    d = Path(directory)
    train = [_read_batch(d / name) for name in TRAIN_BATCHES]
    parts = {
        "train": (np.concatenate([a for a, _ in train]), np.concatenate([b for _, b in train])),
        "test": _read_batch(d / TEST_BATCH),
    }
    out = {}
    for split, (data, labels) in parts.items():
        out[split] = (data.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255), labels.astype(np.int64))
    x, y = out.pop("train")
    cut = len(y) - len(y) // 10  # 45 000 of the standard 50 000
    out["train"], out["val"] = (x[:cut], y[:cut]), (x[cut:], y[cut:])
    for pair in out.values():
        readonly(*pair)
    return out


def load_cifar10_split(split: str, root: str | os.PathLike | None = None) -> Arrays:
    """One CIFAR-10 split.

    Args:
        split: ``"train"`` (45 000), ``"val"`` (5 000) or ``"test"`` (10 000).
        root: directory holding ``cifar-10-batches-py`` (or that directory itself).

    Returns:
        The split's :class:`~gibbon.data._common.Arrays`.
    """
    check_split(split)
    directory = find_cifar10_dir(root)
    x, y = _read_dir(str(directory))[split]
    return Arrays(x, y, _class_names(directory), f"cifar10:{directory}")
