"""Ensemble transfer attacks (Liu, Chen, Liu & Song 2017, "Delving into Transferable Adversarial
Examples and Black-box Attacks", arXiv:1611.02770).

Threat model: black-box *transfer*. The adversary holds several white-box models, crafts one
adversarial example against all of them at once and sends it to a held-out model it cannot
query for gradients. Liu et al. find that examples fooling an ensemble transfer much better than
those crafted on any single member (their section 4).

The ensemble is a model wrapper (:class:`Ensemble`), so every attack runs on it unchanged:
``"logits"`` averages the members' logits, ``"probabilities"`` averages their softmax outputs
and returns the log of the average (Liu et al.'s fusion of the members' predictions, eq. 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.transfer._batches import craft, fooled_rate, predicted_labels

FUSIONS = ("logits", "probabilities")


class Ensemble(nn.Module):
    """Weighted fusion of several models' outputs into one differentiable model.

    Args:
        models: the members, each ``x -> logits`` over the same classes.
        weights: one non-negative weight per member (default: equal), normalised to sum to 1.
        fusion: ``"logits"`` (weighted mean of logits) or ``"probabilities"`` (log of the
            weighted mean of softmax outputs).

    Example:
        >>> a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
        >>> Ensemble([a, b])(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, models, weights=None, fusion: str = "logits"):
        super().__init__()
        models = list(models)
        if not models:
            raise GibbonInputError("an ensemble needs at least one model")
        if fusion not in FUSIONS:
            raise GibbonInputError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
        w = torch.ones(len(models)) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        if w.shape != (len(models),) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise GibbonInputError(f"weights must be {len(models)} non-negative numbers, not all 0")
        self.members = nn.ModuleList(models)
        self.register_buffer("weights", w / w.sum())
        self.fusion = fusion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = torch.stack([m(x) for m in self.members])  # [M, B, K]
        w = self.weights.to(outs.dtype).reshape(-1, 1, 1)
        if self.fusion == "logits":
            return (w * outs).sum(dim=0)
        return torch.log((w * outs.softmax(dim=2)).sum(dim=0).clamp_min(1e-30))


@dataclass
class TransferResult:
    """Accuracy of a held-out target on examples crafted against the sources (:func:`ensemble_transfer`)."""

    target_clean_accuracy: float
    target_adversarial_accuracy: float  # on examples crafted against the whole ensemble
    single_source_accuracy: dict  # target accuracy on examples crafted against each source alone
    transfer_success: float  # fraction of the target's correct images now misclassified (ensemble)


def ensemble_transfer(sources: dict, target, attack, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                      norm: str = "linf", fusion: str = "logits", bounds=(0.0, 1.0), batch_size: int = 250,
                      seed: int = 0) -> TransferResult:
    """Craft ``attack`` on the ensemble of ``sources`` (and on each alone); score on ``target``.

    Args:
        sources: name -> white-box model. target: the held-out model (only its predictions are used).
        attack: any attack ``attack(model, x, y, eps=, norm=, bounds=, generator=)``.
        x, y: images and true labels. eps, norm: the attack's budget. fusion: see :class:`Ensemble`.

    Returns:
        :class:`TransferResult`: the target's accuracy on the ensemble's examples and on each
        single source's, so the ensemble's gain (Liu et al.'s claim) can be read off.
    """
    correct = predicted_labels(target, x, batch_size) == y
    single = {}
    for name, model in sources.items():
        adv = craft(model, attack, x, y, eps=eps, norm=norm, bounds=bounds, batch_size=batch_size, seed=seed)
        single[name] = float((predicted_labels(target, adv, batch_size) == y).float().mean())
    ensemble = Ensemble(list(sources.values()), fusion=fusion)
    adv = craft(ensemble, attack, x, y, eps=eps, norm=norm, bounds=bounds, batch_size=batch_size, seed=seed)
    predicted = predicted_labels(target, adv, batch_size)
    return TransferResult(float(correct.float().mean()), float((predicted == y).float().mean()), single,
                          fooled_rate(predicted, y, correct))
