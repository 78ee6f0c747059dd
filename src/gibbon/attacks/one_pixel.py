"""One-pixel (few-pixel) attack (Su, Vargas & Sakurai 2019, "One Pixel Attack for Fooling Deep
Neural Networks", arXiv:1710.08864).

Black-box (score-based), L0 budget attack, targeted or untargeted. A candidate is ``pixels``
tuples ``(row, col, value per channel)``; differential evolution (DE/rand/1, F = 0.5, no
crossover, Sec. 3.2) evolves a population of candidates for every image at once, minimising the
true-class probability (untargeted) or maximising the target-class probability (targeted). A
child replaces its parent when at least as fit; an image stops as soon as a candidate fools the
model. The model is seen only through an :class:`~gibbon.oracles.Oracle`: every candidate is one
query, at most ``max_queries`` per image.

Budget: ``pixels`` wins when given. Otherwise it comes from the L0 ``eps`` counted in features,
as :data:`gibbon.core.norms.L0` measures distances: ``floor(eps / channels)`` whole pixels, so
the result always lies in the eps-ball. Initialization follows the paper: coordinates uniform,
values Gaussian around the middle of ``bounds`` with half its width as standard deviation
(N(128, 127) for 8-bit images), clipped to the box.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import default_generator, prepare
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.checks import GibbonInputError, check_label_range
from gibbon.core.goals import is_adversarial
from gibbon.core.norms import get_norm
from gibbon.oracles import as_oracle, requires_scores, to_probabilities

NORMS = ("l0",)


def _randint(high: int, shape, gen, like) -> torch.Tensor:
    return torch.randint(high, shape, generator=gen, device=gen.device).to(like.device)


def _random(shape, gen, like, normal: bool = False) -> torch.Tensor:
    draw = torch.randn if normal else torch.rand
    return draw(shape, generator=gen, device=gen.device).to(like.device, like.dtype)


def apply_candidates(x: torch.Tensor, cand: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Images ``x [n, c, h, w]`` with candidate pixels written in.

    ``cand [n, pixels, 2 + c]`` holds (row, col, values); rows and columns are rounded and
    clamped to the image; ``active [n, pixels]`` switches slots off (per-sample pixel budgets).
    """
    n, c, h, w = x.shape
    pos = (cand[..., 0].round().clamp(0, h - 1) * w + cand[..., 1].round().clamp(0, w - 1)).long()  # [n, k]
    flat = x.reshape(n, c, h * w)
    index = pos[:, None, :].expand(n, c, pos.shape[1])
    values = torch.where(active[:, None, :], cand[..., 2:].transpose(1, 2).to(x.dtype), flat.gather(2, index))
    return flat.scatter(2, index, values).reshape(x.shape)


def one_pixel(model, x, y, *, eps=None, norm="l0", pixels: int | None = None, population: int = 400,
              iterations: int = 100, mutation: float = 0.5, max_queries: int | None = None, target=None,
              bounds=(0.0, 1.0), generator=None) -> torch.Tensor:
    """Few-pixel attack by differential evolution.

    Args:
        model: callable ``x -> scores`` (logits or probabilities) or an Oracle; only queried.
        x: images ``(B, C, H, W)`` in ``bounds``. y: true labels ``(B,)``.
        eps: L0 budget in features (float or ``(B,)``), used when ``pixels`` is None.
        norm: ``"l0"`` only. pixels: pixels changed (paper: 1, 3, 5); overrides ``eps``.
        population: candidates per image (paper: 400). iterations: generations (paper: 100).
        mutation: the DE scale factor F (paper: 0.5).
        max_queries: per-image query budget; None: ``population * (iterations + 1)``. The
            population shrinks to ``max_queries`` if larger (at least 3 are needed).
        target: target classes ``(B,)`` or None. bounds: valid box.
        generator: randomness (a fixed seed-0 generator when None).

    Returns:
        ``x_adv`` shaped like ``x``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> x_adv = one_pixel(model, x, torch.tensor([0, 1]), pixels=1, population=20, iterations=5)
        >>> ((x_adv != x).flatten(1).sum(1) <= 1).tolist()
        [True, True]
    """
    lo, hi = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS)
    if x.ndim != 4:
        raise GibbonInputError(f"one-pixel attacks images (B, C, H, W); got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    population, iterations = int(population), int(iterations)
    budget = int(max_queries) if max_queries is not None else population * (iterations + 1)
    size = min(population, budget)
    if size < 3 or iterations < 0:
        raise GibbonInputError("one-pixel needs population >= 3 and max_queries >= 3 (DE/rand/1 mixes 3 candidates)")
    if pixels is not None:
        counts = torch.full((n,), int(pixels), device=x.device)
    elif eps is not None:
        counts = (torch.as_tensor(eps, dtype=torch.float64).to(x.device).expand(n) / c).floor().long()
    else:
        counts = torch.ones(n, dtype=torch.long, device=x.device)
    k = int(counts.max()) if n else 0
    x = x.detach()
    if k < 1:
        return x.clone()
    gen, oracle = default_generator(generator), as_oracle(model, max_queries=budget, n=n)
    active = (torch.arange(k, device=x.device)[None] < counts[:, None])  # [n, k] slots in use
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    scale = torch.tensor([h - 1, w - 1], dtype=x.dtype, device=x.device)

    def init(m):
        coords = _random((m, size, k, 2), gen, x) * scale
        return torch.cat([coords, (mid + half * _random((m, size, k, c), gen, x, normal=True)).clamp(lo, hi)], dim=3)

    checked = []

    def fitness(idx, cand):  # [m, size, k, 2 + c] -> (fitness [m, size], success [m, size])
        m = len(idx)
        rows = idx.repeat_interleave(size)
        images = apply_candidates(x[rows], cand.reshape(m * size, k, 2 + c), active[rows])
        scores = requires_scores(oracle(images, rows), "one-pixel")
        if not checked:  # the first answer tells the class count: no query spent to learn it
            check_label_range(int(scores.shape[1]), y, target)
            checked.append(True)
        labels = (target if target is not None else y)[rows]
        prob = to_probabilities(scores).gather(1, labels[:, None]).squeeze(1)
        fit = -prob if target is not None else prob  # minimised
        success = is_adversarial(scores, y[rows], None if target is None else target[rows])
        return fit.reshape(m, size), success.reshape(m, size)

    x_adv, solved = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    pop = torch.zeros(n, size, k, 2 + c, dtype=x.dtype, device=x.device)
    fit = torch.full((n, size), float("inf"), dtype=x.dtype, device=x.device)
    started = torch.zeros(n, dtype=torch.bool, device=x.device)
    for generation in range(iterations + 1):
        idx = (~solved & (started if generation else True)).nonzero().squeeze(1)
        idx = idx[oracle.affordable(idx, size)]  # a generation costs `size` queries per image
        if idx.numel() == 0:
            break
        m = len(idx)
        if generation == 0:
            children = init(m)
        else:  # DE/rand/1: x_r1 + F (x_r2 - x_r3), r1, r2, r3 distinct (Sec. 3.2, eq. 2)
            r1 = _randint(size, (m, size), gen, x)
            r2 = _randint(size - 1, (m, size), gen, x)
            r2 = r2 + (r2 >= r1).long()
            r3 = _randint(size - 2, (m, size), gen, x)
            r3 = r3 + (r3 >= torch.minimum(r1, r2)).long()
            r3 = r3 + (r3 >= torch.maximum(r1, r2)).long()
            parents = pop[idx]
            pick = lambda r: parents.gather(1, r[:, :, None, None].expand_as(parents))  # noqa: E731
            children = pick(r1) + mutation * (pick(r2) - pick(r3))
            children[..., :2] = torch.minimum(children[..., :2].clamp_min(0), scale)
            children[..., 2:] = children[..., 2:].clamp(lo, hi)
        child_fit, child_success = fitness(idx, children)
        better = child_fit <= fit[idx]
        pop[idx] = torch.where(better[:, :, None, None], children, pop[idx])
        fit[idx] = torch.where(better, child_fit, fit[idx])
        started[idx] = True
        # a fooling child ends the search (the paper's early stop); otherwise keep the fittest so far
        hit, rank = child_success.any(dim=1), torch.arange(m, device=x.device)
        fooling = children[rank, (child_success.to(x.dtype) * 4 - child_fit).argmax(dim=1)]
        fittest = pop[idx][rank, fit[idx].argmin(dim=1)]
        x_adv[idx] = apply_candidates(x[idx], torch.where(hit[:, None, None], fooling, fittest), active[idx])
        solved[idx] = hit
    return x_adv


@register("one-pixel")
@dataclass(frozen=True)
class OnePixel(AttackConfig):
    """Config for :func:`one_pixel` (registry name ``one-pixel``)."""

    pixels: int | None = None
    population: int = 400
    iterations: int = 100
    mutation: float = 0.5
    max_queries: int | None = None
    norms = NORMS
    randomized = True
    black_box = True

    def __call__(self, model, x, y, *, eps=None, norm="l0", target=None, bounds=(0.0, 1.0), generator=None):
        return one_pixel(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator,
                         **self.params())
