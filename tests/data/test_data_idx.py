"""IDX reader/writer on small files, plain and gzip'd."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from gibbon.core.checks import GibbonInputError
from gibbon.data.idx import parse_idx, read_idx, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([3, 1, 4, 1, 5], dtype=np.uint8),
        np.array([[-7, 70000]], dtype=np.int32),
        np.linspace(0, 1, 6, dtype=np.float32).reshape(3, 2),
        np.array([-1.5, 2.25]),
    ],
)
def test_round_trip(tmp_path, array, suffix):
    path = tmp_path / f"a-idx{array.ndim}-ubyte{suffix}"
    write_idx(path, array)
    out = read_idx(path)
    assert out.dtype == array.dtype.newbyteorder("=") and out.shape == array.shape
    assert np.array_equal(out, array)


def test_known_bytes():
    # 2 images of 2x2, uint8: magic 0x00000803, dims 2,2,2
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 2, 2) + bytes(range(8))
    assert parse_idx(raw).tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    raw = bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 2) + struct.pack(">2i", -1, 258)
    assert parse_idx(raw).tolist() == [-1, 258]


def test_gzip_file_is_read_by_suffix(tmp_path):
    raw = bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes([9, 8, 7])
    (tmp_path / "x.gz").write_bytes(gzip.compress(raw))
    assert read_idx(tmp_path / "x.gz").tolist() == [9, 8, 7]


@pytest.mark.parametrize(
    "raw,match",
    [
        (b"\x1f\x8b\x08\x00junk", "bad magic"),
        (bytes([0, 0, 0x42, 1]) + struct.pack(">I", 1) + b"x", "type code"),
        (bytes([0, 0, 8, 3]) + struct.pack(">I", 2), "truncated"),
        (bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"abc", "header says"),
        (bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + b"abc", "header says"),
    ],
)
def test_bad_files(raw, match):
    with pytest.raises(GibbonInputError, match=match):
        parse_idx(raw)


def test_missing_file(tmp_path):
    with pytest.raises(GibbonInputError, match="cannot read"):
        read_idx(tmp_path / "nope")


def test_unsupported_dtype(tmp_path):
    with pytest.raises(GibbonInputError, match="dtype"):
        write_idx(tmp_path / "x", np.zeros(2, dtype=np.uint16))
