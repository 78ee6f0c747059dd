"""CIFAR-10 loader on small fake python batches in the standard format."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.data import load
from gibbon.data.cifar10 import CLASSES, DIRNAME
from gibbon.data.safe_pickle import UnsafePickleError

ROWS = 20  # per training batch; the real batches have 10 000


def _batch(start, rows):
    data = (np.arange(start, start + rows)[:, None] + np.arange(3072)[None]) % 256
    return {
        b"batch_label": b"fake batch",
        b"labels": [int(i % 10) for i in range(start, start + rows)],
        b"data": data.astype(np.uint8),
        b"filenames": [b"img_%d.png" % i for i in range(start, start + rows)],
    }


def _write(directory, meta=True):
    directory.mkdir(parents=True)
    for i in range(5):
        with open(directory / f"data_batch_{i + 1}", "wb") as f:
            pickle.dump(_batch(i * ROWS, ROWS), f, protocol=4)
    with open(directory / "test_batch", "wb") as f:
        pickle.dump(_batch(1000, 7), f, protocol=4)
    if meta:
        with open(directory / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, f, protocol=4)
    return directory


def test_splits_shapes_values(tmp_path):
    d = _write(tmp_path / DIRNAME)
    tr, va, te = (load("cifar10", s, root=tmp_path) for s in ("train", "val", "test"))
    assert tr.x.shape == (90, 3, 32, 32) and va.x.shape == (10, 3, 32, 32) and te.x.shape == (7, 3, 32, 32)
    assert tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert tr.classes == CLASSES and tr.classes[0] == "airplane" and tr.source == f"cifar10:{d}"
    # row-major 3072 = 3 x 32 x 32 (channel planes), / 255
    first = _batch(0, 1)[b"data"][0].reshape(3, 32, 32) / 255
    assert torch.allclose(tr.x[0], torch.from_numpy(first).float())
    assert tr.y[:12].tolist() == [i % 10 for i in range(12)]
    assert va.y.tolist() == [i % 10 for i in range(90, 100)]  # val = last tenth of the training batches
    assert 0 <= tr.x.min() and tr.x.max() <= 1


def test_found_via_env_and_directory_itself(tmp_path, monkeypatch):
    d = _write(tmp_path / "data" / DIRNAME, meta=False)
    monkeypatch.setenv("GIBBON_DATA", str(tmp_path / "data"))
    assert len(load("cifar10", "test")) == 7
    assert load("cifar10", "test", root=d, classes=["cat", "dog"]).classes == ("cat", "dog")


def test_missing_gives_instructions(tmp_path):
    with pytest.raises(GibbonInputError, match="python version of CIFAR-10.*GIBBON_DATA"):
        load("cifar10", root=tmp_path)
    with pytest.raises(GibbonInputError, match="GIBBON_DATA is not set"):
        load("cifar10")


class _Evil:
    def __reduce__(self):
        return (os.system, ("true",))


def test_malicious_batch_is_refused(tmp_path):
    d = _write(tmp_path / DIRNAME)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f, protocol=4)
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        load("cifar10", "test", root=d)
