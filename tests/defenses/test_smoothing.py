"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019, arXiv:1902.02918): known answers on a
linear classifier, the abstain rule, and the certificate against an attack on digits."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from gibbon import data, zoo
from gibbon.attacks import PGD
from gibbon.core.checks import GibbonInputError
from gibbon.defenses.eot import EOT
from gibbon.defenses.noise import noise_objective
from gibbon.defenses.smoothing import Certificate, certified_accuracy, certify, sample_counts, smoothed_predict
from gibbon.defenses.transforms import InputTransformed

W = torch.tensor([3.0, -4.0, 0.0, 12.0])  # ||w|| = 13
B = 0.5


def linear(x):
    """Two classes: 0 where ``w.x + b > 0``. Its smoothed class-0 probability is
    ``Phi((w.x + b) / (sigma ||w||))`` and the certified radius tends to the distance to the boundary."""
    z = x.flatten(1) @ W + B
    return torch.stack([z, -z], dim=1)


def _at_distance(distances):
    """Points whose signed distance to the linear boundary is ``distances``."""
    d = torch.tensor(distances)
    return (d[:, None] * 13 - B) * W / 13 ** 2


def test_certified_radius_matches_the_closed_form():
    sigma, n, alpha = 0.5, 20_000, 0.001
    distances = [0.2, 0.5, 1.0, -0.7]
    cert = certify(linear, _at_distance(distances), sigma=sigma, n=n, alpha=alpha, batch_size=7000,
                   generator=torch.Generator().manual_seed(0))
    assert cert.prediction.tolist() == [0, 0, 0, 1]
    for i, d in enumerate(distances):
        p = stats.norm.cdf(abs(d) / sigma)
        n_a = int(cert.counts[i, cert.prediction[i]])
        sd = math.sqrt(n * p * (1 - p))
        assert abs(n_a - n * p) <= 4 * sd, f"point {i}: {n_a} votes, expected {n * p:.0f} +- {sd:.0f}"
        # the radius is sigma * Phi^-1 of the Clopper-Pearson bound: inside the band of 4 sd of votes
        band = [sigma * stats.norm.ppf(stats.beta.ppf(alpha, k, n - k + 1)) for k in (n * p - 4 * sd, n * p + 4 * sd)]
        radius = float(cert.radius[i])
        assert band[0] <= radius <= band[1], f"point {i}: radius {radius:.4f} outside {band}"
        assert radius <= abs(d), f"point {i}: certified {radius:.4f} beyond the true distance {abs(d)}"
        assert radius >= 0.85 * abs(d), f"point {i}: radius {radius:.4f} far below the distance {abs(d)}"
    assert torch.allclose(cert.p_lower, torch.tensor(stats.beta.ppf(alpha, cert.counts.max(1).values.double(),
                                                                    n - cert.counts.max(1).values.double() + 1)))


def test_abstains_on_the_boundary_and_only_there():
    x = _at_distance([0.0, 0.8, -0.8])
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    pred = smoothed_predict(linear, x, sigma=0.5, n=2000, alpha=0.001, generator=gen())
    assert pred.prediction.tolist() == [-1, 0, 1], pred
    assert float(pred.p_value[0]) > 0.001 and float(pred.p_value[1:].max()) < 1e-10
    assert pred.counts.sum(1).tolist() == [2000] * 3
    cert = certify(linear, x, sigma=0.5, n=2000, generator=gen())
    assert cert.prediction.tolist() == [-1, 0, 1] and float(cert.radius[0]) == 0.0 and float(cert.radius[1]) > 0.5


class GaussianNoise(torch.nn.Module):
    """``x + sigma * N(0, I)`` from the module's own generator (for attacking the smoothed classifier)."""

    def __init__(self, sigma, seed=0):
        super().__init__()
        self.sigma, self.generator = sigma, torch.Generator().manual_seed(seed)

    def forward(self, x):
        return x + self.sigma * torch.randn(x.shape, generator=self.generator)


@pytest.fixture(scope="module")
def noisy_mlp():
    train = data.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                  torch.nn.Linear(128, 10))
    zoo.fit(net, train, epochs=20, batch_size=100, lr=3e-3, objective=noise_objective(0.25), progress=False)
    return net.requires_grad_(False)


def test_certificate_survives_an_l2_attack_on_the_smoothed_classifier(noisy_mlp):
    test = data.load("digits", "test")
    sigma, x, y = 0.25, test.x[:12], test.y[:12]
    cert = certify(noisy_mlp, x, sigma=sigma, n=2000, generator=torch.Generator().manual_seed(0))
    ok = (cert.prediction == y) & (cert.radius > 0.1)
    assert int(ok.sum()) >= 8, f"only {int(ok.sum())} of 12 certified correct: {cert.radius}"
    x, cls, radius = x[ok], cert.prediction[ok], cert.radius[ok].float()
    # attack g itself: PGD-L2 on the expectation over the smoothing noise (EOT)
    smoothed = EOT(InputTransformed(GaussianNoise(sigma), noisy_mlp), samples=64)
    after = {}
    for name, eps in (("within", radius * 0.999), ("beyond", radius * 0 + 3.0)):
        x_adv = PGD(steps=20)(smoothed, x, cls, eps=eps, norm="l2", generator=torch.Generator().manual_seed(0))
        after[name] = smoothed_predict(noisy_mlp, x_adv, sigma=sigma, n=2000,
                                       generator=torch.Generator().manual_seed(2)).prediction
    changed = (after["within"] != cls) & (after["within"] != -1)
    assert not bool(changed.any()), f"certified class changed within the radius: {cls} -> {after['within']}"
    flipped = float(((after["beyond"] != cls) & (after["beyond"] != -1)).float().mean())
    assert flipped >= 0.5, f"the attack is too weak to test the certificate: {flipped:.2f} flipped at L2 3.0"


def test_sampling_is_batched_seeded_and_leaves_the_model_alone(noisy_mlp):
    x = data.load("digits", "test").x[:5]
    noisy_mlp.train()
    counts = [sample_counts(noisy_mlp, x, sigma=0.25, n=300, batch_size=bs, generator=torch.Generator().manual_seed(4))
              for bs in (64, 64, 1500)]
    assert noisy_mlp.training
    noisy_mlp.eval()
    assert torch.equal(counts[0], counts[1]), "same generator seed, different votes"
    assert all(c.sum(1).tolist() == [300] * 5 for c in counts)
    assert float((counts[0] - counts[2]).abs().max()) <= 60  # another noise draw, the same distribution


def test_certified_accuracy_counts_correct_and_certified():
    cert = Certificate(torch.tensor([0, 1, -1, 2]), torch.tensor([0.8, 0.3, 0.0, 1.2]), torch.zeros(4),
                       torch.zeros(4, 3), 0.5, 100, 0.001)
    acc = certified_accuracy(cert, torch.tensor([0, 1, 1, 1]), [0.0, 0.5, 1.0])
    assert acc.tolist() == [0.5, 0.25, 0.0]


@pytest.mark.parametrize("kwargs", [dict(sigma=0.0), dict(n=0), dict(alpha=1.0), dict(batch_size=0)])
def test_bad_arguments_say_what_to_do(kwargs):
    args = dict(sigma=0.5, n=10, alpha=0.01, batch_size=10) | kwargs
    with pytest.raises(GibbonInputError):
        certify(linear, torch.zeros(1, 4), **args)
    with pytest.raises(GibbonInputError):
        smoothed_predict(linear, torch.zeros(1, 4), **args)
