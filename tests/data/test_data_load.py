"""gibbon.data.load on the built-in data sets that need no files: digits and synthetic."""

from __future__ import annotations

import pytest
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.data import DATASETS, SPLITS, Dataset, load
from gibbon.data.digits import SPLIT_SIZES as DIGITS_SIZES
from gibbon.data.synthetic import SPLIT_SIZES as SYNTH_SIZES


@pytest.mark.parametrize(
    "name,sizes,shape", [("digits", DIGITS_SIZES, (1, 8, 8)), ("synthetic", SYNTH_SIZES, (1, 8, 8))]
)
@pytest.mark.parametrize("split", SPLITS)
def test_shapes_dtypes_ranges(name, sizes, shape, split):
    d = load(name, split)
    assert isinstance(d, Dataset)
    assert (d.name, d.split) == (name, split)
    assert d.x.shape == (sizes[split], *shape) and d.input_shape == shape
    assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert d.x.min() >= 0 and d.x.max() <= 1 and d.bounds == (0.0, 1.0)
    assert d.classes == tuple(str(i) for i in range(10)) and d.num_classes == 10
    assert set(d.y.tolist()) == set(range(10))
    assert d.source and d.meta["indices"] is None


def test_digits_splits_partition_the_data():
    import numpy as np
    from sklearn.datasets import load_digits

    assert DIGITS_SIZES == {"train": 1197, "val": 300, "test": 300}
    ours = np.concatenate([load("digits", s).x.flatten(1).numpy() * 16 for s in SPLITS])
    ref = load_digits().data
    rows = lambda a: sorted(map(tuple, a.round().astype(int).tolist()))  # noqa: E731
    assert rows(ours) == rows(ref)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_deterministic(name):
    a, b = load(name, "train"), load(name, "train")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(load(name, "val").x[:10], load(name, "test").x[:10])


def test_returned_tensors_are_independent_copies():
    a = load("digits", "test")
    a.x.zero_()
    assert load("digits", "test").x.max() == 1.0


def test_synthetic_is_linearly_separable():
    from sklearn.linear_model import LogisticRegression

    tr, te = load("synthetic", "train"), load("synthetic", "test")
    clf = LogisticRegression(max_iter=500).fit(tr.x.flatten(1).numpy(), tr.y.numpy())
    assert clf.score(te.x.flatten(1).numpy(), te.y.numpy()) >= 0.99


def test_first_n_and_seeded_subsets():
    full = load("digits", "test")
    first = load("digits", "test", n=17)
    assert torch.equal(first.x, full.x[:17]) and torch.equal(first.y, full.y[:17])
    assert torch.equal(first.meta["indices"], torch.arange(17))
    s1, s2, s3 = (load("digits", "test", n=17, seed=s) for s in (5, 5, 6))
    assert torch.equal(s1.x, s2.x) and not torch.equal(s1.meta["indices"], s3.meta["indices"])
    idx = s1.meta["indices"]
    assert len(set(idx.tolist())) == 17 and torch.equal(s1.x, full.x[idx]) and torch.equal(s1.y, full.y[idx])
    assert len(load("digits", "test", n=len(full))) == len(full)


def test_class_subset_relabels_in_given_order():
    full = load("digits", "train")
    d = load("digits", "train", classes=[7, 3])
    assert d.classes == ("7", "3") and d.num_classes == 2
    assert len(d) == int(((full.y == 7) | (full.y == 3)).sum())
    idx = d.meta["indices"]
    assert torch.equal(d.x, full.x[idx])
    assert torch.equal(d.y, (full.y[idx] == 3).long())  # 7 -> 0, 3 -> 1
    by_name = load("digits", "train", classes=["7", "3"])
    assert torch.equal(by_name.y, d.y)


def test_classes_before_n():
    full = load("digits", "train", classes=[3, 7])
    d = load("digits", "train", classes=[3, 7], n=10)
    assert torch.equal(d.x, full.x[:10]) and torch.equal(d.y, full.y[:10])
    r = load("digits", "train", classes=[3, 7], n=10, seed=0)
    assert set(r.y.tolist()) <= {0, 1} and len(r) == 10
    src = load("digits", "train")
    assert torch.equal(r.x, src.x[r.meta["indices"]])
    assert set(src.y[r.meta["indices"]].tolist()) <= {3, 7}


def test_unknown_dataset_lists_names():
    with pytest.raises(GibbonInputError) as e:
        load("imagenet")
    for name in DATASETS:
        assert name in str(e.value)
    assert "npz:PATH" in str(e.value)
    with pytest.raises(GibbonInputError):
        load("npz:")


def test_bad_split_lists_splits():
    with pytest.raises(GibbonInputError, match="train, val, test"):
        load("digits", "validation")


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_bad_n(n):
    with pytest.raises(GibbonInputError, match="positive integer"):
        load("digits", n=n)


def test_n_too_large():
    with pytest.raises(GibbonInputError, match="only 300 samples"):
        load("digits", "test", n=301)


@pytest.mark.parametrize("classes", [[], [10], [-1], [3, 3], "37", ["cat"]])
def test_bad_classes(classes):
    with pytest.raises(GibbonInputError):
        load("digits", classes=classes)
