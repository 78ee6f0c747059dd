"""Membership inference by loss threshold (Yeom, Giacomelli, Fredrikson & Jha 2018, "Privacy Risk
in Machine Learning: Analyzing the Connection to Overfitting", arXiv:1709.01604).

A training example tends to have a lower loss than an unseen one, so ``-loss(model(x), y)`` is
a membership score: the attacker says "member" above a threshold. The strength of the attack is
read, as Carlini et al. 2022 ("Membership Inference Attacks From First Principles",
arXiv:2112.03570) argue it must be, at **low false-positive rates**: the true-positive rate at
0.1% and 1% FPR, next to the AUC. An attack that only beats chance on average (AUC 0.6) but has
TPR ~ FPR at 0.1% identifies nobody with confidence.

Works on a torch model or on a black box that answers scores (an :class:`gibbon.oracles.Oracle`,
the served API through :class:`~gibbon.oracles.HttpOracle`): scores that are already
probabilities are used as such, others go through a softmax. Every query is counted by the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gibbon.core.checks import GibbonInputError, check_finite, check_labels
from gibbon.oracles.base import to_probabilities

LOW_FPRS = (0.001, 0.01)


@dataclass
class MembershipResult:
    """Scores of members and non-members, and the attack's ROC summary."""

    auc: float
    tpr_at_fpr: dict  # {"0.001": tpr, "0.01": tpr}
    members: int
    non_members: int
    balanced_accuracy: float  # best threshold's (TPR + TNR) / 2 (Yeom et al.'s "advantage" is 2 * this - 1)
    roc: dict = field(repr=False)  # {"fpr": [...], "tpr": [...]} (thinned to at most 1,001 points)
    attack: str = "loss-threshold (Yeom et al. 2018, arXiv:1709.01604)"

    def to_dict(self) -> dict:
        return {"attack": self.attack, "auc": self.auc, "tpr_at_fpr": self.tpr_at_fpr, "members": self.members,
                "non_members": self.non_members, "balanced_accuracy": self.balanced_accuracy, "roc": self.roc}

    def summary(self) -> str:
        low = ", ".join(f"TPR {float(tpr):.2%} at {float(fpr):.1%} FPR" for fpr, tpr in self.tpr_at_fpr.items())
        return f"membership inference ({self.members} members, {self.non_members} non-members): AUC {self.auc:.3f}; {low}"


def membership_scores(model, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 500, device=None) -> torch.Tensor:
    """``-cross-entropy`` of each example (higher: more likely a member), in batches, no gradient."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2 or len(x) != len(y):
        raise GibbonInputError("membership scores need x (N, ...) floats and y (N,) labels of the same length")
    check_finite(x)
    check_labels(y, None)
    if device is None:
        params = list(model.parameters()) if hasattr(model, "parameters") else []
        device = params[0].device if params else torch.device("cpu")
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            scores = model(x[i:i + batch_size].to(device)).float().cpu()
            if scores.ndim != 2:
                raise GibbonInputError(f"the model must answer class scores (B, K), got shape {tuple(scores.shape)}")
            yb = y[i:i + batch_size].long()
            check_labels(yb, scores.shape[1])
            probs = to_probabilities(scores)  # probabilities kept as given, other scores softmaxed
            out.append(torch.log(probs.gather(1, yb[:, None]).squeeze(1).clamp_min(1e-45)))
    return torch.cat(out)


def roc_summary(member_scores, non_member_scores, low_fprs=LOW_FPRS) -> MembershipResult:
    """AUC, TPR at each of ``low_fprs`` (the largest TPR whose FPR is at most it) and the ROC curve."""
    from sklearn.metrics import roc_auc_score, roc_curve

    m = np.asarray(member_scores, dtype=np.float64)
    n = np.asarray(non_member_scores, dtype=np.float64)
    if len(m) == 0 or len(n) == 0:
        raise GibbonInputError("membership inference needs at least one member and one non-member")
    labels = np.r_[np.ones(len(m)), np.zeros(len(n))]
    scores = np.r_[m, n]
    fpr, tpr, _ = roc_curve(labels, scores)
    at = {}
    for target in low_fprs:
        ok = fpr <= target
        at[f"{target:g}"] = float(tpr[ok].max()) if ok.any() else 0.0
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 1001)).round().astype(int))
    return MembershipResult(auc=float(roc_auc_score(labels, scores)), tpr_at_fpr=at, members=len(m),
                            non_members=len(n), balanced_accuracy=float(((tpr + 1 - fpr) / 2).max()),
                            roc={"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()})


def loss_threshold_attack(model, members, non_members, *, batch_size: int = 500, device=None) -> MembershipResult:
    """Yeom et al.'s attack: ``members`` and ``non_members`` are ``(x, y)`` pairs or gibbon Datasets.

    Example:
        >>> result = loss_threshold_attack(model, train_subset, test_subset)  # doctest: +SKIP
        >>> result.auc, result.tpr_at_fpr["0.001"]  # doctest: +SKIP
    """
    (xm, ym), (xn, yn) = _pair(members, "members"), _pair(non_members, "non_members")
    return roc_summary(membership_scores(model, xm, ym, batch_size=batch_size, device=device).numpy(),
                       membership_scores(model, xn, yn, batch_size=batch_size, device=device).numpy())


def _pair(data, name: str):
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data
    raise GibbonInputError(f"{name} must be a gibbon Dataset or an (x, y) pair of tensors")


def save_roc(result: MembershipResult, out_dir, name: str = "membership") -> dict:
    """Write ``name.json`` (the whole result) and ``name.png`` (the ROC on log-log axes) atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gibbon.evaluation.report import write_json_atomic
    from gibbon.zoo.io import write_png_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{name}.json", out / f"{name}.png"
    write_json_atomic(json_path, result.to_dict())
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    floor = 1.0 / max(result.non_members, 1)
    fpr = np.maximum(result.roc["fpr"], floor)
    tpr = np.maximum(result.roc["tpr"], floor)
    ax.loglog(fpr, tpr, label=f"{result.attack.split(' (')[0]}, AUC {result.auc:.3f}")
    ax.loglog([floor, 1], [floor, 1], "k--", lw=0.8, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("membership inference ROC")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    try:
        write_png_atomic(png_path, fig)
    finally:
        plt.close(fig)
    return {"json": str(json_path), "png": str(png_path)}


def advantage(result: MembershipResult) -> float:
    """Yeom et al.'s membership advantage, max over thresholds of TPR - FPR."""
    return 2 * result.balanced_accuracy - 1


__all__ = ["MembershipResult", "membership_scores", "roc_summary", "loss_threshold_attack", "save_roc",
           "advantage", "LOW_FPRS"]
