"""A restricted unpickler that rebuilds plain numpy arrays and nothing else.

The classic dataset pickles (MNIST's ``mnist.pkl.gz``, CIFAR-10's python batches) hold only
numpy arrays, lists, dicts, numbers and strings. Plain :func:`pickle.load` would run any
callable a tampered file names; :class:`ArrayUnpickler` admits only the few numpy globals
that array reconstruction needs and refuses everything else before it is called.

Python 3 writes :class:`bytes` into protocol 0-2 pickles through ``_codecs.encode``, which
is not admitted: such files are refused. Pickles written by Python 2 (the classic data
sets) and protocol 3-4 pickles of arrays, lists and dicts load fine.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

from gibbon.core.checks import GibbonInputError

#: ``(module, name)`` pairs the unpickler admits. Old pickles name ``numpy.core``, which
#: numpy 2 moved to ``numpy._core``; both spellings resolve to the same function.
ARRAY_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }
)


class UnsafePickleError(GibbonInputError, pickle.UnpicklingError):
    """A pickle named a global outside the allow-list; nothing from it was executed."""


def _resolve(module: str, name: str) -> Any:
    import numpy as np

    if (module, name) == ("numpy", "ndarray"):
        return np.ndarray
    if (module, name) == ("numpy", "dtype"):
        return np.dtype
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray._reconstruct


class ArrayUnpickler(pickle.Unpickler):
    """:class:`pickle.Unpickler` that resolves only the globals in :data:`ARRAY_GLOBALS`.

    Args:
        file: binary file object to read the pickle from.
        encoding: how to decode Python 2 ``str`` objects: ``"latin1"`` for numpy arrays
            pickled by Python 2, ``"bytes"`` to keep them as :class:`bytes`.
    """

    def __init__(self, file: IO[bytes], *, encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - pickle hook
        if (module, name) in ARRAY_GLOBALS:
            return _resolve(module, name)
        raise UnsafePickleError(
            f"refusing to unpickle {module}.{name}: this file may not be a plain array pickle; "
            "only numpy arrays, lists, dicts, numbers and strings are accepted. "
            "Check where the file came from, or convert it to .npz with trusted code."
        )

    def persistent_load(self, pid: Any) -> Any:  # noqa: D102 - pickle hook
        raise UnsafePickleError("refusing to unpickle a persistent id: this file is not a plain array pickle")


def load_arrays_pickle(file: IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle ``file`` with :class:`ArrayUnpickler`.

    Args:
        file: binary file object (e.g. from :func:`gzip.open`).
        encoding: see :class:`ArrayUnpickler`.

    Returns:
        The unpickled object (arrays, lists, dicts, tuples, numbers, strings).

    Raises:
        UnsafePickleError: the pickle names any global other than the numpy array ones.
    """
    return ArrayUnpickler(file, encoding=encoding).load()
