"""PRADA: detection of model-extraction and synthetic-query attacks from one client's query stream
(Juuti, Szyller, Marchal & Asokan 2019, "PRADA: Protecting against DNN Model Stealing Attacks",
arXiv:1805.02628, section 4, Algorithm 1).

Benign clients send natural inputs, whose distances to their nearest earlier input of the same
predicted class are roughly normally distributed. Jacobian-based augmentation (Papernot et al.
2017) and decision-based attacks send synthetic points a small step away from earlier ones, so
that distance distribution grows a spike near zero and stops looking normal.

Per client and per predicted class ``c`` the detector keeps a growing set ``G_c``. For a new
query ``x`` of class ``c`` (Algorithm 1): if ``G_c`` is empty, ``x`` joins it; otherwise
``d = min_{y in G_c} ||x - y||_2`` joins the distance set ``D``, and ``x`` joins ``G_c`` (with ``d``
added to ``D_{G_c}``) when ``d > T_c``, where ``T_c = max(T_c, mean(D_{G_c}) - std(D_{G_c}))``.
Once ``|D| >= min_distances`` the Shapiro-Wilk statistic ``W`` of ``D`` is computed; ``W < delta``
raises an alert (the flag stays raised). As in the paper, distances more than 3 standard
deviations from the mean are left out of the test.

Here the detector sees a fixed random Gaussian projection of each query to ``k`` dimensions
(Johnson-Lindenstrauss: L2 distances kept within about ``1/sqrt(2k)``, 6% for ``k = 128``;
``k`` at most half the input size so that the inputs cannot be recovered), stored in float16. That projection, not the raw input, is what the query log
keeps, so the detector's state is rebuilt exactly from the log after a restart. ``delta`` is
0.94 by default, set from measurements on MNIST (the paper also sets it per data set): benign
streams of test or training images stayed at ``W >= 0.958`` after 100 distances, Papernot et
al.'s augmentation stream fell to ``W = 0.82`` after its first augmentation round (numbers and
script in ``docs/serve.md``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

DELTA, MIN_DISTANCES, DIM, SEED = 0.94, 100, 128, 0


def projection(input_dim: int, dim: int = DIM, seed: int = SEED) -> torch.Tensor:
    """The fixed JL projection ``(input_dim, k)``, ``k = min(dim, input_dim // 2)``, entries N(0, 1/k).

    ``k`` is at most half the input size, so the projection is never invertible: the log it is
    written to does not hold the inputs, whatever their size.

    Example:
        >>> projection(784).shape, projection(64).shape
        (torch.Size([784, 128]), torch.Size([64, 32]))
    """
    k = max(1, min(int(dim), int(input_dim) // 2))
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(input_dim, k, generator=gen, dtype=torch.float64).div_(math.sqrt(k)).float()


def project(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (flattened), projected and rounded to float16: ``(B, k)``, what the log stores."""
    return (x.detach().reshape(x.shape[0], -1).float().cpu() @ matrix).half()


def shapiro_w(values: list[float], outliers: float = 3.0) -> float:
    """The Shapiro-Wilk statistic ``W`` of ``values`` without those over ``outliers`` std from the mean
    (1 for a perfectly normal sample; lower is less normal; 0 when all values are equal).

    Example:
        >>> round(shapiro_w([0.0, 1.0, 2.0, 3.0, 4.0]), 3)
        0.987
    """
    from scipy.stats import shapiro

    v = np.asarray(values, dtype=np.float64)
    if len(v) >= 3 and v.std() > 0:
        v = v[np.abs(v - v.mean()) <= outliers * v.std()]  # PRADA drops outliers before the test
    if len(v) < 3 or v.std() <= 0:
        return 0.0 if len(v) >= 3 else 1.0  # all distances equal: as far from normal as it gets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "p-value may not be accurate for N > 5000": W itself is fine
        return float(shapiro(v).statistic)


class _Growing:
    """One class's growing set ``G_c`` (rows of a buffer that doubles), its distances and threshold."""

    def __init__(self, dim: int):
        self.points, self.n = torch.zeros(16, dim), 0
        self.count, self.total, self.squares = 0, 0.0, 0.0  # of D_{G_c}, for its mean and std
        self.threshold = 0.0

    def add(self, point: torch.Tensor, dist: float | None) -> None:
        if self.n == len(self.points):
            self.points = torch.cat([self.points, torch.zeros_like(self.points)])
        self.points[self.n] = point
        self.n += 1
        if dist is not None:
            self.count, self.total, self.squares = self.count + 1, self.total + dist, self.squares + dist * dist
            mean = self.total / self.count
            spread = math.sqrt(max(self.squares / self.count - mean * mean, 0.0))
            self.threshold = max(self.threshold, mean - spread)


@dataclass
class Verdict:
    """The detector's state after a batch: ``statistic`` is None until ``min_distances`` are collected."""

    statistic: float | None
    distances: int
    flagged: bool
    new_alert: bool


class Prada:
    """One client's PRADA monitor. :meth:`observe` a batch, then :meth:`check`.

    Args:
        dim: width of the (projected) queries. delta: alert when ``W < delta``.
        min_distances: distances needed before testing (paper: the test needs enough samples).

    Example:
        >>> det = Prada(dim=2, min_distances=3)
        >>> det.observe(torch.tensor([[0., 0.], [3., 4.], [3., 4.1], [0., .1]]), [0, 0, 0, 0])
        >>> det.distances
        [5.0, 0.1, 0.1]
    """

    def __init__(self, dim: int, *, delta: float = DELTA, min_distances: int = MIN_DISTANCES):
        self.dim, self.delta, self.min_distances = int(dim), float(delta), int(min_distances)
        self.classes: dict[int, _Growing] = {}
        self.distances: list[float] = []
        self.statistic: float | None = None
        self.flagged = False

    def observe(self, rows: torch.Tensor, labels) -> None:
        """Add queries (projected rows ``(B, dim)``, predicted ``labels``) one at a time, in order."""
        rows = rows.float()
        for row, label in zip(rows, [int(c) for c in labels]):
            grow = self.classes.setdefault(label, _Growing(self.dim))
            if grow.n == 0:
                grow.add(row, 0.0)  # Algorithm 1: G_c = {x}, D_{G_c} = {0}
                continue
            d = float(torch.cdist(row[None].double(), grow.points[:grow.n].double()).min())
            d = round(d, 6)  # recorded distances do not depend on the last bits of the matmul
            self.distances.append(d)
            if d > grow.threshold:
                grow.add(row, d)

    def check(self) -> Verdict:
        """Shapiro-Wilk test of the distance set; raises the (sticky) flag when ``W < delta``."""
        if len(self.distances) < self.min_distances:
            return Verdict(None, len(self.distances), self.flagged, False)
        self.statistic = shapiro_w(self.distances)
        new = not self.flagged and self.statistic < self.delta
        self.flagged = self.flagged or new
        return Verdict(self.statistic, len(self.distances), self.flagged, new)


def first_alert(x: torch.Tensor, labels: torch.Tensor, *, delta: float = DELTA, min_distances: int = MIN_DISTANCES,
                dim: int = DIM, seed: int = SEED, chunk: int = 256) -> tuple[int | None, float | None]:
    """Replay one client's query stream ``x`` (in order, with the victim's ``labels``) through the
    detector as ``gibbon serve`` would, ``chunk`` queries per request.

    Returns ``(queries when the alert was raised or None, the last statistic W)``: what a
    deployment's PRADA says about a stream, measured without a server.

    Example:
        >>> at, w = first_alert(torch.rand(300, 1, 8, 8), torch.zeros(300, dtype=torch.long))
        >>> at is None, w > 0.94
        (True, True)
    """
    matrix = projection(int(x[0].numel()), dim, seed)
    detector = Prada(matrix.shape[1], delta=delta, min_distances=min_distances)
    for start in range(0, len(x), chunk):
        detector.observe(project(x[start:start + chunk], matrix), labels[start:start + chunk].tolist())
        if detector.check().new_alert:
            return min(start + chunk, len(x)), detector.statistic
    return None, detector.statistic
