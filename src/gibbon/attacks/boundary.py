"""Boundary attack (Brendel, Rauber & Bethge 2018, "Decision-Based Adversarial Attacks: Reliable
Attacks Against Black-Box Machine Learning Models", arXiv:1712.04248).

Black-box, *decision-based* (top-1 label only), minimal-perturbation attack in L2, untargeted or
targeted. A random walk along the decision boundary that starts from an adversarial point and
only ever accepts adversarial points closer to the original ``o`` (Algorithm 1). Each trial draws
an iid Gaussian ``eta``, makes it orthogonal to the source direction with length
``delta * d(o, x)`` and puts it back on the sphere of radius ``d(o, x)`` around ``o`` (Sec. 3.2,
steps 1-2), then steps ``epsilon * d(o, x)`` towards ``o`` (step 3). As in the trust-region rule
of Sec. 3.4 (and the authors' Foolbox code), the orthogonal candidate is queried first and the
source step only when it is adversarial; over the last 100 orthogonal trials a success rate above
50% (below 20%) multiplies both steps by ``step_adaptation`` (divides), and over the last 30
source steps a rate above 50% (below 20%) does so for ``epsilon`` alone (checked every 10
trials). A sample stops when ``epsilon`` falls below ``convergence`` or its queries run out.

The model is seen only through a label-only :class:`~gibbon.oracles.Oracle`, every query counted
against ``max_queries`` per sample. The start (``starting_points``, an image of the batch
labelled as the target, or uniform noise, as in :func:`~gibbon.attacks.hopskipjump.hopskipjump`)
is first pulled towards ``o`` by a binary search on the blend (Foolbox does a linear search).
Samples run in one batch, each with its own steps and statistics; ``eta`` is drawn per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import default_generator, prepare, where_samples
from gibbon.attacks.hopskipjump import _draw, _view, afford, boundary_search, decision, find_start
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import L2, get_norm
from gibbon.oracles import Oracle

NORMS = ("l2",)


class _Window:
    """Per-sample ring buffers of the last ``size`` trial outcomes (the success-rate statistics)."""

    def __init__(self, n: int, size: int, device):
        self.size, self.buf = size, torch.zeros(n, size, dtype=torch.bool, device=device)
        self.seen = torch.zeros(n, dtype=torch.long, device=device)

    def add(self, rows, values):
        self.buf[rows, self.seen[rows] % self.size] = values
        self.seen[rows] += 1

    def rate(self, rows):
        """(success rate, window full) per row."""
        return self.buf[rows].double().mean(1), self.seen[rows] >= self.size

    def clear(self, rows):
        self.seen[rows] = 0


def _proposals(x, cur, spherical, source, bounds, gen):
    """Sec. 3.2: the orthogonal (spherical) candidate and the candidate after the source step."""
    diff = x - cur  # unnormalised source direction
    dist = _view(L2.distance(diff), x)
    eta = _draw(cur.shape, gen, cur, normal=True)  # step 1: iid Gaussian
    u = diff / dist.clamp_min(1e-12)
    eta = eta - _view((eta * u).flatten(1).sum(1), x) * u  # orthogonal to the source direction
    eta = eta * (_view(spherical, x) * dist / _view(L2.distance(eta), x).clamp_min(1e-12))  # ||eta|| = delta d
    on_sphere = (x + (eta - diff) / _view((1 + spherical ** 2).sqrt(), x)).clamp(*bounds)  # step 2 (Pythagoras)
    new = x - on_sphere
    new_dist = _view(L2.distance(new), x).clamp_min(1e-12)
    length = (_view(source, x) * dist + new_dist - dist).clamp_min(0)  # step 3: eps d, corrected for the clip
    return (on_sphere + length / new_dist * new).clamp(*bounds), on_sphere


def boundary(model, x, y, *, eps=None, norm="l2", max_queries: int = 10_000, steps: int | None = None,
             spherical_step: float = 1e-2, source_step: float = 1e-2, step_adaptation: float = 1.5,
             convergence: float = 1e-7, init_queries: int = 100, starting_points=None, target=None,
             bounds=(0.0, 1.0), generator=None) -> torch.Tensor:
    """Boundary attack: a rejection-sampling walk along the decision boundary, from labels only.

    Args:
        model: callable ``x -> scores`` or an :class:`~gibbon.oracles.Oracle`; only its top-1 label is used.
        x: inputs ``(B, ...)`` in ``bounds``. y: true labels ``(B,)``.
        eps: ignored (minimal attack; the evaluator scores the distances at each eps).
        norm: ``"l2"`` (the paper's distance).
        max_queries: per-sample query budget, the start-up included.
        steps: most trials per sample (None: until the budget or convergence).
        spherical_step: delta, initial relative length of the orthogonal step (paper: 0.01).
        source_step: epsilon, initial relative length of the step towards ``x`` (paper: 0.01).
        step_adaptation: factor by which the steps grow or shrink (Foolbox: 1.5).
        convergence: a sample stops once epsilon is below this (Foolbox: 1e-7).
        init_queries: uniform-noise draws tried per sample to find a start.
        starting_points: adversarial inputs shaped like ``x`` to start from.
        target: target classes ``(B,)`` or None. bounds: valid box.
        generator: randomness (a fixed seed-0 generator when None).

    Returns:
        ``x_adv`` shaped like ``x``: the closest adversarial found per sample, ``x`` where none was.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
        >>> boundary(model, x, y, max_queries=100).shape
        torch.Size([4, 1, 4, 4])
    """
    lo, hi = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS)
    if max_queries < 1 or spherical_step <= 0 or source_step <= 0 or step_adaptation <= 1:
        raise GibbonInputError("boundary needs max_queries >= 1, positive steps and step_adaptation > 1")
    x, gen, n = x.detach(), default_generator(generator), x.shape[0]
    ids = torch.arange(n, device=x.device)
    oracle = Oracle(model, max_queries=int(max_queries), n=n, output="label")
    decide = decision(oracle, y, target)
    start, found, clean_adv = find_start(oracle, decide, x, y, target, (lo, hi), gen, starting_points, init_queries)
    live = found & ~clean_adv
    cur = start.clone()
    cur[live] = boundary_search(decide, oracle, x[live], start[live], ids[live], x[0].numel() ** -1.5, False,
                                (lo, hi))
    spherical = torch.full((n,), float(spherical_step), dtype=x.dtype, device=x.device)
    source = torch.full((n,), float(source_step), dtype=x.dtype, device=x.device)
    stats_spherical, stats_source = _Window(n, 100, x.device), _Window(n, 30, x.device)
    trial = 0
    while steps is None or trial < steps:
        trial += 1
        i = ids[live & (source >= convergence)]
        i = i[afford(oracle, i, 2)]
        if i.numel() == 0:
            break
        cand, on_sphere = _proposals(x[i], cur[i], spherical[i], source[i], (lo, hi), gen)
        spherical_adv = decide(on_sphere, i)  # is the orthogonal step still adversarial? (Sec. 3.4)
        stats_spherical.add(i, spherical_adv)
        j, cand = i[spherical_adv], cand[spherical_adv]
        if j.numel():
            adv = decide(cand, j)  # then the step towards the original
            stats_source.add(j, adv)
            keep = adv & (L2.distance(x[j] - cand) < L2.distance(x[j] - cur[j]))  # adversarial and closer
            cur[j[keep]] = cand[keep]
        if trial % 10:  # the statistics are checked every 10 trials (Foolbox's update_stats_every_k)
            continue
        a = step_adaptation
        rate, full = stats_spherical.rate(i)  # both steps follow the orthogonal success rate (50% / 20%)
        factor = torch.where(full & (rate > 0.5), a, torch.where(full & (rate < 0.2), 1 / a, 1.0)).to(x.dtype)
        spherical[i], source[i] = spherical[i] * factor, source[i] * factor
        stats_spherical.clear(i[factor != 1])
        rate, full = stats_source.rate(i)  # epsilon also follows the source-step success rate
        factor = torch.where(full & (rate > 0.5), a, torch.where(full & (rate < 0.2), 1 / a, 1.0)).to(x.dtype)
        source[i] = source[i] * factor
        stats_source.clear(i[factor != 1])
    return where_samples(found, cur, x)


@register("boundary")
@dataclass(frozen=True)
class Boundary(AttackConfig):
    """Config for :func:`boundary` (registry name ``boundary``)."""

    max_queries: int = 10_000
    steps: int | None = None
    spherical_step: float = 1e-2
    source_step: float = 1e-2
    step_adaptation: float = 1.5
    convergence: float = 1e-7
    init_queries: int = 100
    norms = NORMS
    minimal = True
    randomized = True
    black_box = True

    def __call__(self, model, x, y, *, eps=None, norm="l2", target=None, bounds=(0.0, 1.0), generator=None):
        return boundary(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator,
                        **self.params())

