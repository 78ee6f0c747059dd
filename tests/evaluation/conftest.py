import pytest
import torch
from torch import nn
from _helpers import one_thread  # noqa: F401 - autouse in this directory

from gibbon.data.dataset import Dataset


@pytest.fixture(scope="session")
def linear_digits():
    """A softmax regression trained on scikit-learn digits, and 300 held-out samples as a Dataset."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = torch.tensor(raw.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(raw.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1200], perm[1200:1500]
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # convex problem: a deterministic start, no global RNG
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[train]), y[train]).backward()
        opt.step()
    torch.set_num_threads(threads)
    for p in model.parameters():
        p.grad = None
    data = Dataset("digits", "test", x[test], y[test], tuple(str(i) for i in range(10)), (0.0, 1.0), "sklearn")
    return model, data
