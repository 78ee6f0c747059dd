"""Reader and writer for the IDX format of the MNIST files (``*-idx3-ubyte``, optionally gzip'd)."""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

from gibbon.core.checks import GibbonInputError

# IDX type byte -> big-endian numpy dtype
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}


def _open(path: str | os.PathLike):
    path = os.fspath(path)
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def parse_idx(data: bytes, *, what: str = "IDX data") -> np.ndarray:
    """Decode the bytes of one IDX file.

    Args:
        data: the whole (decompressed) file content.
        what: name used in error messages (e.g. the path).

    Returns:
        Array with the file's dtype (native byte order) and shape.

    Raises:
        GibbonInputError: bad magic number, unknown type code, or size mismatch.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise GibbonInputError(
            f"{what} is not an IDX file (bad magic number); expected files like train-images-idx3-ubyte"
        )
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise GibbonInputError(f"{what}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise GibbonInputError(f"{what} is truncated (header cut short); download it again")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise GibbonInputError(
            f"{what} has {len(data)} bytes but its header says {expected}; the file is truncated or corrupt, "
            "download it again"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file from disk (gzip'd when the name ends with ``.gz``).

    Args:
        path: file path.

    Returns:
        The decoded array, see :func:`parse_idx`.
    """
    try:
        with _open(path) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise GibbonInputError(f"cannot read IDX file {os.fspath(path)}: {e}") from None
    return parse_idx(data, what=os.fspath(path))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip'd when the name ends with ``.gz``); used for tests and caches.

    Args:
        path: destination file.
        array: array of a dtype IDX supports (uint8, int8, int16, int32, float32, float64).
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise GibbonInputError(
            f"IDX cannot store dtype {array.dtype}; use uint8, int8, int16, int32, float32 or float64"
        )
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = array.astype(_DTYPES[code]).tobytes()
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + body)
