"""PRADA on real query streams: Jacobian augmentation flagged, i.i.d. natural images not; its building blocks.

Measured with this file's models (digits, 32-dimensional projection, 200 distances before the
first test): benign streams of all 1,797 digits in 12 random orders kept ``W >= 0.942``; the
augmentation streams of 3 seeds fell to ``W = 0.75-0.80``. A detector without the outlier cut,
or with wrong distances, or feeding every query into the growing set, leaves one side of the
thresholds below.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import one_thread  # noqa: F401 - autouse in this module

from gibbon.serve.prada import Prada, project, projection, shapiro_w
from gibbon.transfer import train_substitute

DELTA, MIN_DISTANCES = 0.9, 200


def monitor(model, batches, chunk: int = 10):
    """Feed ``batches`` to a fresh detector ``chunk`` rows at a time (as requests); the W after each."""
    matrix = projection(64)
    det, stats = Prada(matrix.shape[1], delta=DELTA, min_distances=MIN_DISTANCES), []
    for xb in batches:
        for c in xb.split(chunk):
            with torch.no_grad():
                det.observe(project(c, matrix), model(c).argmax(1))
            verdict = det.check()
            if verdict.statistic is not None:
                stats.append(verdict.statistic)
    return det, stats


def augmentation_stream(model, seeds: torch.Tensor, seed: int) -> list:
    """What Papernot et al.'s substitute training sends the oracle (4 rounds of Jacobian augmentation)."""
    sent = []

    def oracle(q):
        sent.append(q.clone())
        with torch.no_grad():
            return model(q)

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sub = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    train_substitute(oracle, seeds, sub, rounds=4, step=0.1, epochs=5, seed=seed)
    return sent


def test_jacobian_augmentation_stream_is_flagged(digits_mlp, digits):
    _, _, x_test, _ = digits
    sent = augmentation_stream(digits_mlp, x_test[:50], seed=0)
    det, stats = monitor(digits_mlp, sent)
    assert sum(len(s) for s in sent) == 800
    assert det.flagged and min(stats) < 0.85, f"augmentation stream: min W {min(stats):.3f}, flagged {det.flagged}"


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_iid_natural_images_are_not_flagged(digits_mlp, digits, seed):
    x = torch.cat([digits[0], digits[2]])
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    det, stats = monitor(digits_mlp, [x[order]])
    assert len(det.distances) > 1700
    assert not det.flagged and min(stats) > 0.93, f"benign stream: min W {min(stats):.3f}"


def test_growing_set_keeps_far_queries_only():
    det = Prada(dim=2, min_distances=3)
    det.observe(torch.tensor([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0], [30.0, 1.0]]), [1] * 5)
    grow = det.classes[1]
    assert det.distances == [10.0, 10.0, 10.0, 1.0]
    # D_{G_c} = {0, 10, 10, 10}: T = mean - std = 7.5 - 4.33, so the near-duplicate (30, 1) stays out
    assert grow.n == 4 and grow.threshold == pytest.approx(7.5 - 75 ** 0.5 / 2)
    det.observe(torch.tensor([[5.0, 5.0]]), [2])  # a new class starts its own set: no distance
    assert len(det.distances) == 4 and det.classes[2].n == 1
    assert det.check().statistic is not None and det.check().new_alert is False  # flagged once, then sticky
    assert det.flagged


def test_batching_does_not_change_the_state():
    rows = torch.rand(60, 8, generator=torch.Generator().manual_seed(0)).half()
    labels = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(1)).tolist()
    one, many = Prada(8), Prada(8)
    one.observe(rows, labels)
    for i in range(0, 60, 7):
        many.observe(rows[i:i + 7], labels[i:i + 7])
    assert one.distances == many.distances and len(one.distances) == 57


def test_shapiro_drops_outliers_and_sees_spikes():
    normal = np.random.default_rng(0).normal(5.0, 1.0, 500).tolist()
    assert shapiro_w(normal + [80.0]) > 0.99
    assert shapiro_w(normal + [80.0], outliers=float("inf")) < 0.5
    spiky = normal + [0.5] * 150  # a mass of near-duplicates, as augmentation sends
    assert shapiro_w(spiky) < 0.9
    assert shapiro_w([1.0] * 200) == 0.0


def test_projection_keeps_distances_and_is_not_invertible():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(300, 784, generator=gen), torch.rand(300, 784, generator=gen)
    m = projection(784)
    ratio = (project(a, m).float() - project(b, m).float()).norm(dim=1) / (a - b).norm(dim=1)
    assert m.shape == (784, 128) and 0.75 < float(ratio.min()) and float(ratio.max()) < 1.25
    assert abs(float(ratio.mean()) - 1) < 0.05
    small = projection(64)
    assert small.shape == (64, 32) and torch.equal(small, projection(64))  # fixed seed: same matrix every start
