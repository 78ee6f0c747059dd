"""What every backdoor detector reports: which training rows it flags, and at what cost.

Recall is the share of the poisons flagged; ``clean_removed`` is the share of the *clean* rows
flagged (the data a defender throws away for nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gibbon.core.checks import GibbonInputError


@dataclass(frozen=True)
class DetectionResult:
    """Rows a detector flags.

    Attributes:
        method: ``"spectral"`` or ``"activation-clustering"``.
        flagged: bool ``(N,)``, True for the rows to remove.
        scores: float ``(N,)`` outlier scores (higher: more suspicious; NaN where not scored).
        per_class: per-label details (the detector's statistics and how many it flagged).
        settings: the detector's parameters.
    """

    method: str
    flagged: torch.Tensor
    scores: torch.Tensor
    per_class: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def metrics(self, poison_mask: torch.Tensor) -> dict:
        """Recall of the poisons, share of clean rows removed, and precision, against the truth."""
        return detection_metrics(self.flagged, poison_mask)

    def to_dict(self, poison_mask: torch.Tensor | None = None) -> dict:
        out = {"method": self.method, "settings": self.settings, "flagged": int(self.flagged.sum()),
               "n": int(len(self.flagged)), "per_class": self.per_class}
        if poison_mask is not None:
            out["metrics"] = self.metrics(poison_mask)
        return out


def detection_metrics(flagged: torch.Tensor, poison_mask: torch.Tensor) -> dict:
    flagged, poison_mask = flagged.bool(), poison_mask.bool()
    if flagged.shape != poison_mask.shape:
        raise GibbonInputError(f"flagged {tuple(flagged.shape)} and poison mask {tuple(poison_mask.shape)} differ")
    poisons, clean = int(poison_mask.sum()), int((~poison_mask).sum())
    hit, wasted = int((flagged & poison_mask).sum()), int((flagged & ~poison_mask).sum())
    return {"poisons": poisons, "flagged": int(flagged.sum()), "poisons_flagged": hit, "clean_flagged": wasted,
            "recall": hit / poisons if poisons else float("nan"),
            "clean_removed": wasted / clean if clean else float("nan"),
            "precision": hit / int(flagged.sum()) if int(flagged.sum()) else float("nan")}


def check_features(features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise GibbonInputError(f"features must be (N, D) and labels (N,), got {tuple(features.shape)} and "
                               f"{tuple(labels.shape)}")
    if len(labels) == 0:
        raise GibbonInputError("no training rows to inspect")
    if not bool(torch.isfinite(features).all()):
        raise GibbonInputError("the features hold NaN or infinite values; the model's activations are broken "
                               "for some inputs (check the inputs are in the model's range)")
