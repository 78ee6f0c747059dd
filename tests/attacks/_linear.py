"""Shared test pieces: a binary linear model, where the minimal perturbation has a closed form."""

from __future__ import annotations

import torch

DUAL = {"linf": 1.0, "l2": 2.0, "l1": float("inf")}


class Binary(torch.nn.Module):
    """f(x) = w.x + b as two logits ``[0, f]``: label 1 iff f > 0."""

    def __init__(self, w, b):
        super().__init__()
        self.w, self.b = torch.nn.Parameter(w), torch.nn.Parameter(b)

    def forward(self, x):
        f = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(f), f], dim=1)


def linear_case(seed: int = 0, n: int = 32):
    """``(model, x, y, |f(x)|)``: 20 features in float64, labels the model's own predictions."""
    g = torch.Generator().manual_seed(seed)
    model = Binary(torch.randn(20, generator=g, dtype=torch.float64), torch.tensor(0.3, dtype=torch.float64))
    x = torch.randn(n, 1, 4, 5, generator=g, dtype=torch.float64)
    with torch.no_grad():
        f = model(x)[:, 1]
    return model, x, (f > 0).long(), f.abs()


def exact_margin(model: Binary, f: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest perturbation norm that flips the sign: |f| / ||w||_dual."""
    return f / model.w.detach().norm(p=DUAL[norm])
