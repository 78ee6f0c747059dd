import pytest
import torch
from sklearn.datasets import load_digits

from gibbon.data.dataset import Dataset

CLASSES = tuple(str(i) for i in range(10))


def make_dataset(x, y, split="train", name="digits", classes=CLASSES):
    return Dataset(name=name, split=split, x=x, y=y, classes=tuple(classes), source="sklearn.datasets.load_digits")


@pytest.fixture(scope="session")
def digits():
    """sklearn digits as (train 1400, val 397) gibbon Datasets, x in [0, 1], shape N x 1 x 8 x 8."""
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return make_dataset(x[:1400], y[:1400], "train"), make_dataset(x[1400:], y[1400:], "val")
