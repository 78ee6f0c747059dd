"""Shared machinery for clean-label targeted poisoning experiments: the victim's retraining
(a linear head on frozen features, as in the transfer-learning setting of Shafahi et al. 2018,
"Poison Frogs! Targeted Clean-Label Poisoning Attacks on Neural Networks", arXiv:1804.00792; or
a network trained from scratch, as in Geiping et al. 2021, "Witches' Brew: Industrial Scale Data
Poisoning via Gradient Matching", arXiv:2009.02276), success-rate bookkeeping and the result
records.

A targeted attack succeeds on one target image when the victim retrained on the poisoned set
classifies that (unmodified) target as the attacker's label; the success rate is over targets,
each with its own poisons and its own retraining.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError


def check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise GibbonInputError(f"{what} must be a whole number >= 1, got {value!r}")
    return int(value)


def check_images(x, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or len(x) == 0:
        raise GibbonInputError(f"{what} must be a non-empty batch tensor (N, C, H, W), got "
                               f"{getattr(x, 'shape', type(x).__name__)}")
    return x


# --------------------------------------------------------------------------- linear heads on features


def train_linear_heads(features: torch.Tensor, labels: torch.Tensor, extra_x: torch.Tensor, extra_y: torch.Tensor,
                       *, num_classes: int, steps: int = 300, lr: float = 0.05, weight_decay: float = 0.0,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``B`` softmax-regression heads trained from zero at once, full batch (Adam): head ``b`` on the
    shared clean ``(features, labels)`` plus its own ``extra_x[b]`` (``(B, m, D)``) labelled ``extra_y[b]``.

    This is the victim of the transfer-learning setting (the frozen extractor's last layer
    retrained on the poisoned set), batched so that each target gets its own retraining cheaply.
    Zero initialisation makes the (convex) problem's result independent of any RNG.
    Returns ``(W (B, K, D), b (B, K))``.
    """
    n, d = features.shape
    bsz, m = extra_x.shape[:2]
    w = torch.zeros(bsz, num_classes, d, requires_grad=True)
    bias = torch.zeros(bsz, num_classes, requires_grad=True)
    opt = torch.optim.Adam([w, bias], lr=lr)
    extra_y = extra_y.reshape(bsz, m)
    # standardising by the clean features' scale keeps one lr right for any extractor
    scale = features.std().clamp_min(1e-8)
    feats, extra = features / scale, extra_x / scale
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        clean_logits = torch.einsum("nd,bkd->bnk", feats, w) + bias[:, None]
        extra_logits = torch.einsum("bmd,bkd->bmk", extra, w) + bias[:, None]
        # each head's mean loss over its own n + m points; the sum over heads decouples them
        loss = (F.cross_entropy(clean_logits.reshape(-1, num_classes), labels.repeat(bsz), reduction="sum")
                + F.cross_entropy(extra_logits.reshape(-1, num_classes), extra_y.reshape(-1), reduction="sum")
                ) / (n + m)
        loss = loss + 0.5 * weight_decay * (w ** 2).sum()
        loss.backward()
        opt.step()
    return (w.detach() / scale), bias.detach()


def head_predict(w: torch.Tensor, b: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Predictions of every head: ``features`` ``(M, D)`` (shared) -> ``(B, M)``, or ``(B, M, D)``
    (one set per head) -> ``(B, M)``."""
    eq = "md,bkd->bmk" if features.dim() == 2 else "bmd,bkd->bmk"
    return (torch.einsum(eq, features, w) + b[:, None]).argmax(-1)


# --------------------------------------------------------------------------- training from scratch


def train_from_scratch(arch: str, train, *, epochs: int, seed: int, batch_size: int = 128, lr: float = 1e-3,
                       device="cpu") -> torch.nn.Module:
    """A fresh zoo ``arch`` initialised with ``seed`` and trained with :func:`gibbon.zoo.fit` (Adam)
    on ``train``; the caller's global RNG is untouched."""
    from gibbon import zoo

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = zoo.build(arch, train).to(device)
    zoo.fit(model, train, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=False)
    return model.eval()


@torch.no_grad()
# --------------------------------------------------------------------------- results


def _plain(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class CleanLabelResult:
    """One clean-label experiment over ``n_targets`` targets.

    Attributes:
        attack: ``"feature-collision"``, ``"gradient-matching"`` or a baseline's name.
        success_rate: fraction of targets the retrained victim gives the attacker's label.
        successes: per target, whether it did (bool list).
        target_indices: the targets' rows in the test set.
        attacker_labels: per target, the label the attacker wanted.
        clean_accuracy: test accuracy of the model trained on clean data (the clean head; for
            gradient matching, the crafting model).
        poisoned_accuracy: mean test accuracy of the victims retrained on the poisoned sets.
        l2, linf: mean per-poison distance to the unperturbed image it came from.
        seconds: wall time of crafting and retraining.
        setting: the experiment's parameters, for reports.
    """

    attack: str
    success_rate: float
    successes: list
    target_indices: list
    attacker_labels: list
    clean_accuracy: float
    poisoned_accuracy: float
    l2: float
    linf: float
    seconds: float
    setting: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def success_rate(predictions: torch.Tensor, attacker_labels: torch.Tensor) -> tuple[float, list]:
    """``(rate, per-target successes)`` for the victims' predictions on their targets."""
    hits = (torch.as_tensor(predictions).flatten() == torch.as_tensor(attacker_labels).flatten())
    return (float(hits.float().mean()) if len(hits) else 0.0), [bool(h) for h in hits]


def perturbation_norms(poisons: torch.Tensor, originals: torch.Tensor) -> tuple[float, float]:
    """Mean L2 and mean L-inf distance of each poison to its original image."""
    diff = (poisons - originals).flatten(1)
    return float(diff.norm(dim=1).mean()), float(diff.abs().amax(dim=1).mean())
