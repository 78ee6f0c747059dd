"""load("npz:PATH") on files the tests write."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.data import load

RNG = np.random.default_rng(0)


def _save(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.mark.parametrize(
    "x,shape",
    [
        (RNG.integers(0, 256, (5, 6, 7), dtype=np.uint8), (5, 1, 6, 7)),
        (RNG.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8), (5, 3, 6, 7)),
        (RNG.integers(0, 256, (5, 6, 7, 1), dtype=np.uint8), (5, 1, 6, 7)),
        (RNG.random((5, 3, 6, 7)), (5, 3, 6, 7)),
        (RNG.random((5, 1, 4, 4), dtype=np.float32), (5, 1, 4, 4)),
    ],
)
def test_layouts_and_dtypes(tmp_path, x, shape):
    y = np.array([0, 2, 1, 2, 0], dtype=np.uint8)
    d = load(_save(tmp_path, x=x, y=y), "train")
    assert d.x.shape == shape and d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert d.y.tolist() == [0, 2, 1, 2, 0] and d.classes == ("0", "1", "2")
    assert d.split == "train" and d.meta["split_ignored"] and d.source.startswith("npz:")
    if x.dtype == np.uint8:
        ref = x if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        assert torch.allclose(d.x.reshape(ref.shape), torch.from_numpy(ref / 255).float())
    else:
        assert torch.allclose(d.x, torch.from_numpy(x).float())


def test_nhwc_values_are_transposed(tmp_path):
    x = np.zeros((1, 2, 2, 3), np.uint8)
    x[0, 0, 1, 2] = 255  # row 0, column 1, channel 2
    d = load(_save(tmp_path, x=x, y=np.array([0])))
    assert d.x[0, 2, 0, 1] == 1.0 and d.x.sum() == 1.0


def test_per_split_keys_and_class_names(tmp_path):
    spec = _save(
        tmp_path,
        x_train=np.zeros((4, 3, 3), np.uint8), y_train=np.array([0, 1, 0, 1]),
        x_test=np.ones((2, 3, 3), np.float32), y_test=np.array([1, 1]),
        classes=np.array(["cat", "dog"]),
    )
    tr, te = load(spec, "train"), load(spec, "test", classes=["dog"])
    assert len(tr) == 4 and tr.classes == ("cat", "dog") and "split_ignored" not in tr.meta
    assert len(te) == 2 and te.classes == ("dog",) and te.y.tolist() == [0, 0]
    with pytest.raises(GibbonInputError, match="x_val"):
        load(spec, "val")


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"x": np.full((2, 4, 4), 1.5), "y": np.array([0, 1])}, r"span \[1\.5, 1\.5\].*\[0, 1\]"),
        ({"x": np.full((2, 4, 4), -0.1, np.float32), "y": np.array([0, 1])}, "divide"),
        ({"x": np.full((2, 4, 4), np.nan), "y": np.array([0, 1])}, "NaN"),
        ({"x": np.zeros((2, 16), np.uint8), "y": np.array([0, 1])}, "reshape"),
        ({"x": np.zeros((2, 5, 4, 4), np.uint8), "y": np.array([0, 1])}, "channel axis"),
        ({"x": np.zeros((2, 4, 4), np.int32), "y": np.array([0, 1])}, "uint8"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 1, 2])}, r"shape \(2,\)"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0.0, 1.0])}, "integers"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, -1])}, "negative"),
        ({"x": np.zeros((2, 4, 4), np.uint8), "y": np.array([0, 2]), "classes": np.array(["a", "b"])}, "no name"),
        ({"images": np.zeros((2, 4, 4), np.uint8)}, "needs 'x' and 'y'"),
        ({"x": np.array([None, None]), "y": np.array([0, 1])}, "without pickle"),
    ],
)
def test_bad_files(tmp_path, arrays, match):
    with pytest.raises(GibbonInputError, match=match):
        load(_save(tmp_path, **arrays))


def test_missing_file(tmp_path):
    with pytest.raises(GibbonInputError, match="not found.*numpy.savez"):
        load(f"npz:{tmp_path / 'nope.npz'}")
