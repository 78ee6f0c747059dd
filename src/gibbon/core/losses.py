"""Per-sample classification losses an attacker ascends.

Every loss maps ``(logits [B, K], labels [B]) -> [B]``, one value per sample, so that one
sample's gradient never depends on the rest of the batch. The convention is "how wrong the
prediction is with respect to ``labels``": an untargeted attack *ascends* ``loss(logits, y)``,
a targeted one *descends* ``loss(logits, target)``.

References:
    Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural Networks",
    arXiv:1608.04644 (margin loss, their f_6).
    Croce & Hein (2020), "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", arXiv:2003.01690 (difference of logits ratio, DLR).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy ``-log softmax(logits)[label]``.

    Example:
        >>> cross_entropy(torch.tensor([[2.0, 0.0]]), torch.tensor([0])).round(decimals=4)
        tensor([0.1269])
    """
    return F.cross_entropy(logits, labels, reduction="none")


def _label_and_best_other(logits: torch.Tensor, labels: torch.Tensor):
    label_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return label_logit, others.amax(dim=1)


def margin(logits: torch.Tensor, labels: torch.Tensor, confidence: float = 0.0) -> torch.Tensor:
    """C&W margin ``max_{j != label} z_j - z_label``, capped at ``confidence`` (kappa).

    Positive exactly when the prediction is not ``label``. The cap stops the attacker from
    spending effort beyond ``confidence`` once the sample is misclassified.

    Example:
        >>> margin(torch.tensor([[3.0, 1.0, 0.0]]), torch.tensor([0]), confidence=10.0)
        tensor([-2.])
    """
    label_logit, best_other = _label_and_best_other(logits, labels)
    return torch.clamp(best_other - label_logit, max=confidence) if confidence is not None else best_other - label_logit


def dlr(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020, eq. 6), shift- and scale-invariant.

    ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``, with ``pi`` the logits sorted in
    decreasing order; needs at least three classes.
    """
    if logits.shape[1] < 3:
        raise ValueError("the DLR loss needs at least 3 classes; use margin for binary models")
    label_logit, best_other = _label_and_best_other(logits, labels)
    top = logits.sort(dim=1, descending=True).values
    return -(label_logit - best_other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted(logits: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 7): ascend it to move from ``labels`` to ``target``.

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``; needs at least four classes.
    """
    if logits.shape[1] < 4:
        raise ValueError("the targeted DLR loss needs at least 4 classes")
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES = {"ce": cross_entropy, "cross_entropy": cross_entropy, "margin": margin, "dlr": dlr}


def get_loss(loss):
    """Resolve a loss given by name (``ce``, ``margin``, ``dlr``) or pass a callable through."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)} or pass a function")
    return LOSSES[loss]
