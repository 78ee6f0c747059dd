"""What every transfer pipeline runs: batched predictions, crafting on a source, and the rate the
transferred examples fool a target."""

from __future__ import annotations

import torch


def predicted_labels(model, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Top-1 labels of ``model`` (a network, or an Oracle answering scores or labels), batch by batch."""
    with torch.no_grad():
        out = [model(chunk) for chunk in x.split(batch_size)]
    out = torch.cat(out) if out else torch.zeros(0, dtype=torch.long)
    return out.argmax(dim=1) if out.ndim == 2 else out.long()


def craft(model, attack, x: torch.Tensor, y: torch.Tensor, *, eps, norm, bounds, batch_size: int,
          seed: int) -> torch.Tensor:
    """``attack`` on ``model`` batch by batch; batch ``i`` draws from a generator seeded ``seed + i``."""
    out = []
    for i, (xb, yb) in enumerate(zip(x.split(batch_size), y.split(batch_size))):
        gen = torch.Generator().manual_seed(seed + i)
        out.append(attack(model, xb, yb, eps=eps, norm=norm, bounds=bounds, generator=gen).detach())
    return torch.cat(out)


def fooled_rate(predicted: torch.Tensor, y: torch.Tensor, correct: torch.Tensor) -> float:
    """The fraction of the images a target got right (``correct``) whose perturbed version it now
    gets wrong (``predicted != y``): the transfer success rate; 0 if it got none right."""
    return float((predicted[correct] != y[correct]).float().mean()) if bool(correct.any()) else 0.0
