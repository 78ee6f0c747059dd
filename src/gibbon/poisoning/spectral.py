"""Spectral signatures (Tran, Li & Madry 2018, "Spectral Signatures in Backdoor Attacks",
arXiv:1811.00636, Algorithm 1), with an optional robust whitening step.

Per label: centre the penultimate representations, take the top right singular vector ``v`` of
the centred matrix, and score each row by ``<r_i - mean, v>^2``; remove the ``1.5 * eps * n``
top-scoring rows of the label, ``eps`` being an upper bound on its poisoned fraction.

Two additions, both off with ``whiten=None, eps=<float>`` (Algorithm 1 as written):

* ``whiten="robust"``: first whiten each label's representations with a covariance estimated on
  its least outlying 85% of rows (three trimming rounds), the robust-statistics step of SPECTRE
  (Hayase, Kong, Somani & Oh 2021, "SPECTRE: Defending Against Backdoor Attacks Using Robust
  Statistics", arXiv:2104.11315). Clean variance then no longer outweighs the poisons' direction:
  on a LeNet-5 with 1% BadNets poisons, the plain top direction recovers about half of them, the
  whitened one all of them (``docs/poisoning.md``).
* ``eps="auto"``: the defender does not know which labels hold poisons nor how many. Each label's
  projections on ``v`` are split in two by 1-D two-means; the smaller group's share estimates its
  poisoned fraction, and the split's separation (Ashman's D) is compared across labels: a label
  whose D is an outlier (robust z-score above ``anomaly``, 2 as in Neural Cleanse's anomaly
  index) is filtered with ``eps`` = its estimate; the other labels are left alone.
"""

from __future__ import annotations

import math

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.poisoning.detection import DetectionResult, check_features

MULTIPLIER = 1.5  # Tran et al. remove 1.5 eps n: the bound is loose, a margin costs a little clean data
TRIM, TRIM_ROUNDS, RIDGE, ROWS_PER_DIM = 0.15, 3, 1e-3, 10
ANOMALY = 2.0
WHITEN = ("robust", None)


def robust_whiten(features: torch.Tensor, *, trim: float = TRIM, rounds: int = TRIM_ROUNDS,
                  rows_per_dim: int = ROWS_PER_DIM) -> torch.Tensor:
    """Whiten ``(n, D)`` rows with the mean and covariance of their ``1 - trim`` least outlying share.

    With fewer than ``rows_per_dim`` rows per dimension the rows are first projected on their top
    ``n // rows_per_dim`` principal directions: a covariance estimated from too few rows whitens
    the poisons' direction away with the noise. A ridge of ``1e-3`` x the mean variance keeps the
    covariance invertible.
    """
    f = features.double()
    dims = max(1, len(f) // rows_per_dim)
    if dims < f.shape[1]:
        centred = f - f.mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        f = centred @ vh[:dims].T
    keep = torch.ones(len(f), dtype=torch.bool)
    z = f - f.mean(0)
    for _ in range(rounds):
        mean = f[keep].mean(0)
        centred = f[keep] - mean
        cov = centred.T @ centred / max(1, len(centred))
        cov += RIDGE * float(cov.diagonal().mean().clamp_min(1e-12)) * torch.eye(f.shape[1], dtype=f.dtype)
        values, vectors = torch.linalg.eigh(cov)
        z = (f - mean) @ (vectors / values.clamp_min(1e-12).sqrt())
        distance = (z ** 2).sum(1)
        keep = distance <= distance.quantile(1 - trim)
    return z


def top_projection(features: torch.Tensor) -> torch.Tensor:
    """``<r_i - mean, v>`` with ``v`` the top right singular vector of the centred rows (signed)."""
    centred = features.double() - features.double().mean(0, keepdim=True)
    if len(features) < 2:
        return torch.zeros(len(features), dtype=torch.float64)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return centred @ vh[0]


def signature_scores(features: torch.Tensor, *, whiten: str | None = None) -> torch.Tensor:
    """Tran et al.'s outlier score ``<r_i - mean, v>^2`` for one label's representations."""
    return top_projection(robust_whiten(features) if whiten == "robust" else features) ** 2


def two_means_split(projection: torch.Tensor, iters: int = 50) -> tuple[torch.Tensor, float]:
    """1-D two-means: ``(mask of the smaller group, Ashman's D separation of the two groups)``."""
    p = projection.double()
    if len(p) < 4:
        return torch.zeros(len(p), dtype=torch.bool), 0.0
    low, high = p.quantile(0.05), p.quantile(0.95)
    upper = p > (low + high) / 2
    for _ in range(iters):
        if upper.all() or not upper.any():
            break
        low, high = p[~upper].mean(), p[upper].mean()
        new = p > (low + high) / 2
        if torch.equal(new, upper):
            break
        upper = new
    if upper.all() or not upper.any():
        return torch.zeros(len(p), dtype=torch.bool), 0.0
    spread = math.sqrt(float(p[upper].var(unbiased=False) + p[~upper].var(unbiased=False))) or 1e-12
    separation = math.sqrt(2) * abs(float(p[upper].mean() - p[~upper].mean())) / spread
    return (upper if upper.double().mean() < 0.5 else ~upper), separation


def anomaly_index(values: list[float]) -> list[float]:
    """Robust z-scores ``(v - median) / (1.4826 * MAD)`` (Wang et al. 2019's anomaly index)."""
    t = torch.tensor(values, dtype=torch.float64)
    median = t.median()
    mad = 1.4826 * (t - median).abs().median()
    return ((t - median) / mad.clamp_min(1e-12)).tolist()


def spectral_signatures(features: torch.Tensor, labels: torch.Tensor, *, eps="auto", whiten: str | None = "robust",
                        multiplier: float = MULTIPLIER, anomaly: float = ANOMALY) -> DetectionResult:
    """Flag the rows the spectral-signature defense removes.

    Args:
        features: penultimate representations ``(N, D)`` of the training rows
            (:func:`gibbon.poisoning.features.penultimate_features` of the trained model).
        labels: the training labels as given (poisoned labels included) ``(N,)``.
        eps: upper bound on each label's poisoned fraction: a float for every label (Tran et
            al.), a ``{label: float}`` dict (labels not in it are left alone), or ``"auto"``.
        whiten: ``"robust"`` (default) or None (Algorithm 1 as written).
        multiplier: remove ``multiplier * eps * n_label`` rows per label.
        anomaly: ``"auto"`` filters labels whose separation's anomaly index exceeds this.
    """
    check_features(features, labels)
    if whiten not in WHITEN:
        raise GibbonInputError(f"whiten must be 'robust' or None, got {whiten!r}")
    if not multiplier > 0:
        raise GibbonInputError(f"multiplier must be > 0, got {multiplier}")
    flagged = torch.zeros(len(labels), dtype=torch.bool)
    scores = torch.full((len(labels),), float("nan"), dtype=torch.float64)
    per_class = {}
    for label in labels.unique().tolist():
        rows = (labels == label).nonzero().flatten()
        projection = top_projection(robust_whiten(features[rows]) if whiten else features[rows])
        scores[rows] = projection ** 2
        smaller, separation = two_means_split(projection)
        per_class[label] = {"rows": rows, "n": len(rows), "estimate": float(smaller.double().mean()),
                            "separation": separation}
    if isinstance(eps, str) and eps == "auto":
        labels_seen = list(per_class)
        index = anomaly_index([per_class[c]["separation"] for c in labels_seen])
        for c, a in zip(labels_seen, index):
            per_class[c]["anomaly_index"] = a
            per_class[c]["eps"] = per_class[c]["estimate"] if a > anomaly else 0.0
    else:
        for c in per_class:
            per_class[c]["eps"] = _given_bound(eps, c)
    for c, info in per_class.items():
        rows = info.pop("rows")
        k = min(len(rows), round(multiplier * info["eps"] * len(rows)))
        if k > 0:
            flagged[rows[scores[rows].argsort(descending=True)[:k]]] = True
        info["removed"] = k
    settings = {"eps": {str(k): v for k, v in eps.items()} if isinstance(eps, dict) else eps, "whiten": whiten,
                "multiplier": multiplier, "anomaly": anomaly}
    return DetectionResult("spectral", flagged, scores.float(), {str(c): v for c, v in per_class.items()}, settings)


def _given_bound(eps, label: int) -> float:
    if isinstance(eps, str):
        raise GibbonInputError(f"eps must be a fraction in [0, 1), a {{label: fraction}} dict or 'auto', got {eps!r}")
    value = eps.get(label, 0.0) if isinstance(eps, dict) else eps
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise GibbonInputError(f"eps must be a fraction in [0, 1), got {value!r} for label {label}")
    return float(value)
