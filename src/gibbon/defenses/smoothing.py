"""Randomized smoothing: a certified L2 defense (Cohen, Rosenfeld & Kolter 2019, "Certified
Adversarial Robustness via Randomized Smoothing", arXiv:1902.02918).

The smoothed classifier ``g(x) = argmax_c P(f(x + eps) = c)``, ``eps ~ N(0, sigma^2 I)``, of any
base classifier ``f`` is provably constant within L2 radius ``R = sigma * Phi^-1(p_A)`` around
``x`` whenever the top class has probability ``p_A > 1/2`` (their theorem 1, with ``p_B = 1 -
p_A``). ``p_A`` is estimated by Monte Carlo, so both functions below may abstain (label ``-1``):

* :func:`smoothed_predict` (their PREDICT): ``n`` noisy votes; abstain unless the top two counts
  differ at level ``alpha`` (two-sided binomial test); then the top class is ``g(x)`` with
  probability at least ``1 - alpha``.
* :func:`certify` (their CERTIFY): guess the class from ``n0`` votes, estimate ``p_A`` from ``n``
  fresh ones with the one-sided Clopper-Pearson lower bound at level ``alpha``, abstain unless it
  exceeds 1/2, else certify ``R = sigma * Phi^-1(p_A_lower)``; the certificate is wrong with
  probability at most ``alpha``.

Noise is not clipped to the input box (as in their code): the base model should be trained on
the same unclipped noise (``--defense noise:sigma=...``, :mod:`gibbon.defenses.noise`).
Sampling is batched across images and noise draws (``batch_size`` rows per forward pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy import stats

from gibbon.core.checks import GibbonInputError

ABSTAIN = -1


@dataclass
class SmoothedPrediction:
    """:func:`smoothed_predict`'s answer: ``prediction [B]`` (``-1`` = abstain), ``counts [B, K]``
    (votes per class), ``p_value [B]`` (binomial test of the top two counts)."""

    prediction: torch.Tensor
    counts: torch.Tensor
    p_value: torch.Tensor


@dataclass
class Certificate:
    """:func:`certify`'s answer, per image: ``prediction`` (``-1`` = abstain), certified L2
    ``radius`` (0 where abstaining), ``p_lower`` (the lower bound on ``p_A``), ``counts [B, K]``
    (the ``n`` estimation votes), and the ``sigma``, ``n``, ``alpha`` it was computed with."""

    prediction: torch.Tensor
    radius: torch.Tensor
    p_lower: torch.Tensor
    counts: torch.Tensor
    sigma: float
    n: int
    alpha: float


def _check(sigma, n, alpha, batch_size) -> None:
    if not sigma > 0:
        raise GibbonInputError(f"sigma must be > 0, got {sigma!r}; use the sigma the base model was trained with")
    if isinstance(n, bool) or int(n) != n or n < 1 or int(batch_size) != batch_size or batch_size < 1:
        raise GibbonInputError(f"n and batch_size must be whole numbers >= 1, got n={n!r}, batch_size={batch_size!r}")
    if not 0 < alpha < 1:
        raise GibbonInputError(f"alpha must be in (0, 1), got {alpha!r} (Cohen et al.: 0.001)")


@torch.no_grad()
def sample_counts(base, x: torch.Tensor, *, sigma: float, n: int, batch_size: int = 1000,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Votes ``counts[i, c] = #{j < n : argmax base(x_i + sigma * z_ij) = c}``, ``z_ij ~ N(0, I)``.

    Rows ``i * n + j`` are run ``batch_size`` at a time, across image boundaries. ``base`` runs
    in eval mode (restored afterwards); ``generator`` defaults to a fresh seed-0 one.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    was_training = getattr(base, "training", None)
    if was_training is not None:
        base.eval()
    counts = None
    try:
        total = x.shape[0] * int(n)
        for start in range(0, total, int(batch_size)):
            image = torch.arange(start, min(start + int(batch_size), total), device=x.device) // int(n)
            noise = torch.randn((len(image), *x.shape[1:]), generator=generator, dtype=x.dtype,
                                device=generator.device).to(x.device)
            logits = base(x[image] + sigma * noise)
            votes = logits.argmax(dim=1)
            if counts is None:
                counts = torch.zeros(x.shape[0], logits.shape[1], dtype=torch.int64, device=x.device)
            counts.view(-1).index_add_(0, image * counts.shape[1] + votes, torch.ones_like(votes))
    finally:
        if was_training is not None:
            base.train(was_training)
    return counts if counts is not None else torch.zeros(0, 0, dtype=torch.int64, device=x.device)


def smoothed_predict(base, x: torch.Tensor, *, sigma: float, n: int = 1000, alpha: float = 0.001,
                     batch_size: int = 1000, generator: torch.Generator | None = None) -> SmoothedPrediction:
    """Cohen et al.'s PREDICT (section 3.2.1): the smoothed class of each image, or abstain.

    Example:
        >>> base = lambda x: torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], dim=1)
        >>> out = smoothed_predict(base, torch.tensor([[3.0], [-3.0], [0.0]]), sigma=1.0, n=500)
        >>> out.prediction
        tensor([ 0,  1, -1])
    """
    _check(sigma, n, alpha, batch_size)
    counts = sample_counts(base, x, sigma=sigma, n=n, batch_size=batch_size, generator=generator)
    top2 = counts.topk(2, dim=1) if counts.shape[1] > 1 else None
    first, second = (top2.values[:, 0], top2.values[:, 1]) if top2 is not None else (counts[:, 0], counts[:, 0] * 0)
    p = torch.tensor([stats.binomtest(int(a), int(a + b), 0.5).pvalue for a, b in zip(first, second)],
                     dtype=torch.float64)
    winner = counts.argmax(dim=1)
    prediction = torch.where(p.to(winner.device) <= alpha, winner, torch.full_like(winner, ABSTAIN))
    return SmoothedPrediction(prediction, counts, p)


def certify(base, x: torch.Tensor, *, sigma: float, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
            batch_size: int = 1000, generator: torch.Generator | None = None) -> Certificate:
    """Cohen et al.'s CERTIFY (section 3.2.2): prediction and certified L2 radius per image.

    Example:
        >>> base = lambda x: torch.stack([x.flatten(1).sum(1), -x.flatten(1).sum(1)], dim=1)
        >>> cert = certify(base, torch.tensor([[1.0], [0.0]]), sigma=0.5, n=2000)
        >>> cert.prediction, cert.radius.round(decimals=1)  # the true radii are 1.0 and 0
        (tensor([ 0, -1]), tensor([0.9000, 0.0000], dtype=torch.float64))
    """
    _check(sigma, n0, alpha, batch_size)
    _check(sigma, n, alpha, batch_size)
    guess = sample_counts(base, x, sigma=sigma, n=n0, batch_size=batch_size, generator=generator).argmax(dim=1)
    counts = sample_counts(base, x, sigma=sigma, n=n, batch_size=batch_size, generator=generator)
    n_a = counts.gather(1, guess[:, None])[:, 0].cpu().double().numpy()
    # one-sided (1 - alpha) Clopper-Pearson lower bound on p_A; 0 when no vote went to the guess
    lower = torch.from_numpy(stats.beta.ppf(alpha, n_a, n - n_a + 1)).nan_to_num(0.0)
    certified = lower > 0.5
    radius = torch.where(certified, sigma * torch.from_numpy(stats.norm.ppf(lower.numpy())), torch.zeros_like(lower))
    prediction = torch.where(certified.to(guess.device), guess, torch.full_like(guess, ABSTAIN))
    return Certificate(prediction, radius, lower, counts, float(sigma), int(n), float(alpha))


def certified_accuracy(result: Certificate, y: torch.Tensor, radii) -> torch.Tensor:
    """Fraction of images certified correct at each radius: ``prediction == y`` and ``radius >= r``.

    Example:
        >>> cert = Certificate(torch.tensor([0, 1, -1]), torch.tensor([0.8, 0.3, 0.0]), torch.zeros(3),
        ...                    torch.zeros(3, 2), 0.5, 100, 0.001)
        >>> certified_accuracy(cert, torch.tensor([0, 1, 1]), [0.0, 0.5])
        tensor([0.6667, 0.3333])
    """
    correct = result.prediction.cpu() == y.cpu()
    radius = result.radius.cpu()
    return torch.tensor([float((correct & (radius >= r)).double().mean()) for r in radii])
