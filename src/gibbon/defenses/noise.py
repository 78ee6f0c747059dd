"""Gaussian data augmentation, the base-model training of randomized smoothing (Cohen, Rosenfeld &
Kolter 2019, "Certified Adversarial Robustness via Randomized Smoothing", arXiv:1902.02918,
section 3.4 / appendix B).

A smoothed classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)`` is only as good as
the base classifier ``f`` is on noisy inputs, so ``f`` is trained with the cross-entropy at
``x + N(0, sigma^2 I)``, the same ``sigma`` as the one it will be smoothed with. As in Cohen
et al.'s code the noisy input is *not* clipped to the box: the smoothed classifier queries
``f`` at exactly these unclipped points (:mod:`gibbon.defenses.smoothing`).
``--defense noise:sigma=0.5``; by itself this is no defense against a white-box attack on ``f``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError
from gibbon.defenses.registry import DefenseConfig, register


def noise_objective(sigma: float, generator: torch.Generator | None = None):
    """Cross-entropy at ``x + sigma * N(0, I)`` (unclipped), for :func:`gibbon.zoo.fit`.

    Args:
        sigma: standard deviation of the Gaussian noise, in input units (0.25, 0.5, 1.0 in Cohen et al.).
        generator: the noise's randomness; default the global RNG, which :func:`gibbon.zoo.fit`
            seeds inside ``fork_rng`` (so training is reproducible and the caller's RNG untouched).

    Returns:
        ``objective(model, x, y) -> (loss, logits)``, the logits being those at the noisy inputs.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> objective = noise_objective(0.25, generator=torch.Generator().manual_seed(0))
        >>> loss, logits = objective(model, torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> loss.shape, logits.shape
        (torch.Size([]), torch.Size([5, 3]))

    References:
        Cohen, Rosenfeld & Kolter (2019), arXiv:1902.02918, appendix B ("train with noise").
    """
    if not sigma > 0:
        raise GibbonInputError(f"noise: sigma must be > 0, got {sigma!r}; for clean training leave out --defense")

    def objective(model, x: torch.Tensor, y: torch.Tensor):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype,
                            device=x.device if generator is None else generator.device).to(x.device)
        logits = model(x + sigma * noise)
        return F.cross_entropy(logits, y), logits

    objective.__qualname__ = f"noise_objective(sigma={sigma})"
    return objective


@register("noise")
@dataclass(frozen=True)
class NoiseTraining(DefenseConfig):
    """``--defense noise:sigma=0.25`` (Cohen et al. 2019): the base model of randomized smoothing."""

    paper = "Cohen, Rosenfeld & Kolter 2019, arXiv:1902.02918"
    sigma: float = 0.25

    def objective(self, train):
        return noise_objective(self.sigma)
