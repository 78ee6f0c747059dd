"""Activation clustering (Chen, Carvalho, Baracaldo, Ludwig, Edwards, Lee, Molloy & Srivastava
2018, "Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering",
arXiv:1811.03728).

Per label: reduce the penultimate activations to 10 dimensions with ICA (the paper's choice; it
keeps the sources that separate a mixed population), split them in two with k-means, and call
the smaller cluster poisoned when it is small enough (relative size at most ``max_size``, the
paper's 0.35) and the split is real (silhouette score at least ``min_silhouette``): a clean label
splits into two big halves of similar style, a poisoned one into its own images and the
relabelled ones, which the network maps somewhere else.

``whiten="robust"`` clusters the label's robustly whitened activations instead
(:func:`gibbon.poisoning.spectral.robust_whiten`, our addition): on LeNet-5 features the paper's
ICA split cuts a poisoned label's clean images in two halves and misses the poisons, the whitened
split isolates them (numbers in ``docs/poisoning.md``).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.poisoning.detection import DetectionResult, check_features
from gibbon.poisoning.spectral import robust_whiten

COMPONENTS = 10
MAX_SIZE = 0.35
MIN_SILHOUETTE = 0.15
SILHOUETTE_SAMPLE = 2000  # silhouette is O(n^2): score a fixed random subsample of each label


def reduce_ica(features: np.ndarray, components: int, seed: int) -> np.ndarray:
    """FastICA to ``components`` sources (fewer if the label has fewer rows or dimensions)."""
    from sklearn.decomposition import FastICA

    k = max(1, min(components, features.shape[1], len(features) - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FastICA's convergence warning on near-degenerate labels
        return FastICA(n_components=k, random_state=seed, whiten="unit-variance", max_iter=400).fit_transform(features)


def split_label(features: np.ndarray, *, components: int, seed: int) -> tuple[np.ndarray, float, float]:
    """``(mask of the smaller cluster, its relative size, silhouette)`` for one label."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    if len(features) < 4:
        return np.zeros(len(features), dtype=bool), 0.0, 0.0
    reduced = reduce_ica(features, components, seed)
    assignment = KMeans(n_clusters=2, n_init=10, random_state=seed).fit_predict(reduced)
    if assignment.min() == assignment.max():
        return np.zeros(len(features), dtype=bool), 0.0, 0.0
    small = assignment == (1 if assignment.mean() < 0.5 else 0)
    rng = np.random.default_rng(seed)
    sample = rng.permutation(len(features))[:SILHOUETTE_SAMPLE]
    labels = assignment[sample]
    silhouette = float(silhouette_score(reduced[sample], labels)) if 0 < labels.mean() < 1 else 0.0
    return small, float(small.mean()), silhouette


def activation_clustering(features: torch.Tensor, labels: torch.Tensor, *, components: int = COMPONENTS,
                          max_size: float = MAX_SIZE, min_silhouette: float = MIN_SILHOUETTE,
                          whiten: str | None = None, seed: int = 0) -> DetectionResult:
    """Flag the smaller activation cluster of every label that looks poisoned.

    Args:
        features: penultimate activations ``(N, D)`` of the training rows.
        labels: the training labels as given ``(N,)``.
        components: ICA dimensions (the paper's 10).
        max_size: a cluster this small or smaller (share of its label) may be poisons.
        min_silhouette: and the two clusters must be at least this well separated.
        whiten: None (the paper) or ``"robust"``.
        seed: ICA, k-means and the silhouette subsample.
    """
    check_features(features, labels)
    if not 0 < max_size < 0.5:
        raise GibbonInputError(f"max_size must be in (0, 0.5), got {max_size}; the paper uses 0.35")
    if int(components) != components or components < 1:
        raise GibbonInputError(f"components must be a whole number >= 1, got {components!r}")
    if whiten not in ("robust", None):
        raise GibbonInputError(f"whiten must be 'robust' or None, got {whiten!r}")
    flagged = torch.zeros(len(labels), dtype=torch.bool)
    scores = torch.zeros(len(labels))
    per_class = {}
    for label in labels.unique().tolist():
        rows = (labels == label).nonzero().flatten()
        f = robust_whiten(features[rows]) if whiten else features[rows].double()
        small, size, silhouette = split_label(f.numpy(), components=int(components), seed=seed)
        poisoned = 0 < size <= max_size and silhouette >= min_silhouette
        small_t = torch.from_numpy(small)
        scores[rows[small_t]] = silhouette
        if poisoned:
            flagged[rows[small_t]] = True
        per_class[str(label)] = {"n": len(rows), "relative_size": size, "silhouette": silhouette,
                                 "poisoned": poisoned, "removed": int(small.sum()) if poisoned else 0}
    settings = {"components": int(components), "max_size": max_size, "min_silhouette": min_silhouette,
                "whiten": whiten, "seed": seed}
    return DetectionResult("activation-clustering", flagged, scores, per_class, settings)
