"""HopSkipJumpAttack (Chen, Jordan & Wainwright 2020, "HopSkipJumpAttack: A Query-Efficient
Decision-Based Attack", arXiv:1904.02144).

Black-box, *decision-based* (top-1 label only), minimal-perturbation attack in L2 or L-infinity,
untargeted or targeted. From an adversarial start it repeats (Algorithm 2): a binary search to
the boundary (Algorithm 1, threshold theta = d^-3/2 in L2 and d^-2 in L-infinity), a
Monte-Carlo estimate of the boundary's normal from ``B_t = B_0 sqrt(t)`` random probes at radius
delta_t with the mean decision subtracted as a baseline, the update direction (the estimate in
L2, its sign in L-infinity), and a geometric step-size search ``xi_t = ||x_{t-1} - x*|| / sqrt(t)``
halved until the step lands on the adversarial side. The model is seen only through a label-only
:class:`~gibbon.oracles.Oracle`: every query counts against ``max_queries`` per sample, checked
before each batch of queries; all samples are attacked together (masks for their progress).

Choices here: the clean input is queried first (1 query; an already misclassified input is
returned as is). Targeted starts come from ``starting_points``, else the first image of the batch
the oracle labels as the target, else uniform noise. ``delta_t`` follows the paper at every
iteration (the reference code uses ``0.1 * width`` at t = 1), the L-infinity binary-search
threshold ``theta`` is scaled by the box width, the step search gives up after 30 halvings (the
sample then stays where it is) and the best adversarial seen (not the last) is returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gibbon.attacks._common import default_generator, prepare, where_samples
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import L2, LINF, get_norm
from gibbon.oracles import Oracle

NORMS = ("l2", "linf")


def _draw(shape, gen, like, normal=False) -> torch.Tensor:
    draw = torch.randn if normal else torch.rand
    return draw(shape, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def afford(oracle: Oracle, ids: torch.Tensor, k: int = 1) -> torch.Tensor:
    """``bool[len(ids)]``: the samples that can pay ``k`` more queries each (under a shared
    budget, together: :meth:`~gibbon.oracles.Oracle.affordable`). Ask about the samples you query."""
    return oracle.affordable(ids, k)


def decision(oracle: Oracle, y, target):
    """``decide(points, ids) -> bool``: phi(x) of the paper, from top-1 labels only."""
    def decide(points, ids):
        labels = oracle(points, ids).to(y.device)
        return labels == target[ids] if target is not None else labels != y[ids]
    return decide


def find_start(oracle, decide, x, y, target, bounds, gen, starting_points=None, init_queries=100):
    """An adversarial start per sample: ``(start, found, clean_adv)`` (``start`` is ``x`` where none)."""
    n, (lo, hi), ids = x.shape[0], bounds, torch.arange(x.shape[0], device=x.device)
    start, pred = x.clone(), torch.full((n,), -1, dtype=torch.long, device=x.device)
    ok = ids[afford(oracle, ids)]
    pred[ok] = oracle(x[ok], ok).to(x.device).long()  # the clean prediction (1 query)
    clean_adv = (pred == target) if target is not None else (pred != y) & (pred >= 0)
    found = clean_adv.clone()
    if starting_points is not None:
        if starting_points.shape != x.shape:
            raise GibbonInputError(f"starting_points must be shaped like x {tuple(x.shape)}")
        k = ids[~found]
        k = k[afford(oracle, k)]
        points = starting_points.detach().to(x)[k].clamp(lo, hi)
        if k.numel() and not bool((adv := decide(points, k)).all()):
            raise GibbonInputError(f"starting_points for samples {k[~adv].tolist()[:5]} are not adversarial; "
                                   "pass adversarial points or leave starting_points=None")
        start[k], found[k] = points, True
    elif target is not None:  # the first image of the batch already labelled as the target
        match = pred[None, :] == target[:, None]
        use = ~found & match.any(1)
        start[use], found = x[match.int().argmax(1)[use]], found | use
    for _ in range(init_queries):  # uniform noise until adversarial (the reference's initialize)
        k = ids[~found]
        k = k[afford(oracle, k)]
        if k.numel() == 0:
            break
        noise = lo + (hi - lo) * _draw(x[k].shape, gen, x)
        adv = decide(noise, k)
        start[k[adv]], found[k[adv]] = noise[adv], True
    return start, found, clean_adv


def boundary_search(decide, oracle, x, x_adv, ids, theta, linf, bounds):
    """BIN-SEARCH (Algorithm 1): from adversarial ``x_adv`` towards ``x``, stop within ``theta`` of the boundary.

    L2 searches the blend ``(1 - a) x + a x_adv`` over ``a`` in [0, 1] to precision theta; L-infinity
    searches the radius ``a`` of ``clip(x_adv, x - a, x + a)`` to ``min(theta * dist, theta * width)``.
    """
    n, (lo, hi) = x.shape[0], bounds
    if linf:
        high = LINF.distance(x_adv - x).double()
        thr = torch.minimum(high * theta, torch.full_like(high, theta * (hi - lo)))

        def point(k, a):
            a = _view(a, x)
            return torch.minimum(torch.maximum(x_adv[k], x[k] - a), x[k] + a)
    else:
        high = torch.ones(n, dtype=torch.float64, device=x.device)
        thr = torch.full_like(high, theta)

        def point(k, a):
            return (x[k] + _view(a, x) * (x_adv[k] - x[k])).clamp(lo, hi)
    low, k = torch.zeros_like(high), torch.arange(n, device=x.device)
    for _ in range(64):
        k = k[high[k] - low[k] > thr[k]]
        k = k[afford(oracle, ids[k])]
        if k.numel() == 0:
            break
        mid = (high[k] + low[k]) / 2
        adv = decide(point(k, mid), ids[k])
        high[k], low[k] = torch.where(adv, mid, high[k]), torch.where(adv, low[k], mid)
    return point(torch.arange(n, device=x.device), high)


def _normal_estimate(decide, cur, ids, counts, delta, linf, bounds, gen, batch_size):
    """Monte-Carlo estimate of the boundary normal at ``cur`` with baseline, ``counts[i]`` probes per sample."""
    n, rest = cur.shape[0], cur.shape[1:]
    wide = (n, 1) + (1,) * len(rest)
    s_fu, s_u, s_f = torch.zeros_like(cur), torch.zeros_like(cur), torch.zeros(n, dtype=cur.dtype, device=cur.device)
    per_call, total = max(1, batch_size // n), int(counts.max())
    for first in range(0, total, per_call):
        m = min(per_call, total - first)
        u = _draw((n, m, *rest), gen, cur, normal=not linf)  # Gaussian (L2) or uniform in [-1, 1] (Linf)
        u = u if not linf else 2 * u - 1
        u = u / u.flatten(2).norm(dim=2).reshape(n, m, *([1] * len(rest))).clamp_min(1e-12)
        probe = (cur[:, None] + delta.reshape(wide) * u).clamp(*bounds)
        u = (probe - cur[:, None]) / delta.reshape(wide)  # the direction actually probed inside the box
        valid = torch.arange(first, first + m, device=cur.device)[None] < counts[:, None]
        f = torch.zeros(n, m, dtype=cur.dtype, device=cur.device)
        f[valid] = 2 * decide(probe[valid], ids[:, None].expand(n, m)[valid]).to(cur.dtype) - 1  # phi in {-1, 1}
        s_fu += (f.reshape(n, m, *([1] * len(rest))) * u).sum(1)
        s_u += (valid.to(cur.dtype).reshape(n, m, *([1] * len(rest))) * u).sum(1)
        s_f += f.sum(1)
    mean_f = s_f / counts.to(cur.dtype)
    grad = s_fu - _view(mean_f, cur) * s_u  # sum_b (phi_b - mean phi) u_b, up to 1 / (B - 1)
    return torch.where(_view(mean_f, cur) == 1, s_u, torch.where(_view(mean_f, cur) == -1, -s_u, grad))


def _step_search(decide, oracle, cur, v, xi, ids, bounds, halvings=30):
    """Geometric step-size search (Algorithm 2): halve ``xi`` until ``cur + xi v`` is adversarial."""
    out, xi, k = cur.clone(), xi.clone(), torch.arange(cur.shape[0], device=cur.device)
    for _ in range(halvings):
        k = k[afford(oracle, ids[k])]
        if k.numel() == 0:
            break
        cand = (cur[k] + _view(xi[k], cur) * v[k]).clamp(*bounds)
        adv = decide(cand, ids[k])
        out[k[adv]] = cand[adv]
        k = k[~adv]
        xi[k] = xi[k] / 2
    return out


def hopskipjump(model, x, y, *, eps=None, norm="l2", max_queries: int = 10_000, steps: int | None = None,
                init_evals: int = 100, max_evals: int = 10_000, gamma: float = 1.0, init_queries: int = 100,
                batch_size: int = 4096, starting_points=None, target=None, bounds=(0.0, 1.0),
                generator=None) -> torch.Tensor:
    """HopSkipJumpAttack: boundary search, gradient-direction estimate and geometric step, from labels only.

    Args:
        model: callable ``x -> scores`` or an :class:`~gibbon.oracles.Oracle`; only its top-1 label is used.
        x: inputs ``(B, ...)`` in ``bounds``. y: true labels ``(B,)``.
        eps: ignored (minimal attack; the evaluator scores the distances at each eps).
        norm: ``"l2"`` or ``"linf"`` (the paper's two versions).
        max_queries: per-sample query budget, the start-up included (paper's plots: up to 25,000).
        steps: iterations T (None: until ``max_queries`` is spent).
        init_evals: B_0, probes of the first gradient estimate (paper: 100); ``B_t = B_0 sqrt(t)``.
        max_evals: cap on ``B_t`` (reference code: 10,000).
        gamma: theta = gamma d^-3/2 (L2) or gamma d^-2 (L-infinity), d the input dimension (paper: 1).
        init_queries: uniform-noise draws tried per sample to find a start.
        batch_size: most rows per oracle call in the gradient estimate.
        starting_points: adversarial inputs shaped like ``x`` to start from (e.g. target-class images).
        target: target classes ``(B,)`` or None. bounds: valid box.
        generator: randomness (a fixed seed-0 generator when None).

    Returns:
        ``x_adv`` shaped like ``x``: the closest adversarial found per sample, ``x`` where none was.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
        >>> hopskipjump(model, x, y, max_queries=300).shape
        torch.Size([4, 1, 4, 4])
    """
    lo, hi = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS)
    if max_queries < 1 or init_evals < 1 or max_evals < 1 or gamma <= 0 or batch_size < 1:
        raise GibbonInputError("hopskipjump needs max_queries, init_evals, max_evals, batch_size >= 1 and gamma > 0")
    norm, x, gen, n = get_norm(norm), x.detach(), default_generator(generator), x.shape[0]
    linf, d, ids = norm.name == "linf", x[0].numel(), torch.arange(n, device=x.device)
    theta = gamma / d ** 2 if linf else gamma / d ** 1.5  # the paper's binary-search threshold
    oracle = Oracle(model, max_queries=int(max_queries), n=n, output="label")
    decide = decision(oracle, y, target)
    start, found, clean_adv = find_start(oracle, decide, x, y, target, (lo, hi), gen, starting_points, init_queries)
    live = found & ~clean_adv
    cur = start.clone()
    cur[live] = boundary_search(decide, oracle, x[live], start[live], ids[live], theta, linf, (lo, hi))  # Alg. 2 l. 2
    best, best_dist = cur.clone(), norm.distance(cur - x)
    reserve = math.ceil(math.log2(1 / theta)) + 2  # keep enough for one step search and one binary search
    t = 0
    while steps is None or t < steps:
        t += 1
        evals = min(int(init_evals * math.sqrt(t)), max_evals)  # B_t = B_0 sqrt(t)
        # the samples that can pay a step (2 probes + the reserve); a shared budget is split among them
        i = ids[live]
        i = i[afford(oracle, i, reserve + 2)]
        counts = torch.zeros(n, dtype=torch.long, device=x.device)
        counts[i] = oracle.grant(i, reserve + evals).to(x.device) - reserve  # a cut by a shared total is counted
        i = ids[live & (counts >= 2)]
        if i.numel() == 0:
            break
        dist = norm.distance(cur[i] - x[i])
        # probe radius delta_t = sqrt(d) theta d_{t-1} (L2), d theta d_{t-1} (L-infinity)
        delta = ((d * theta if linf else math.sqrt(d) * theta) * dist).clamp_min(1e-12)
        grad = _normal_estimate(decide, cur[i], i, counts[i], delta, linf, (lo, hi), gen, batch_size)
        v = grad.sign() if linf else L2.ascent(grad)  # update direction v_t (Alg. 2)
        x_tilde = _step_search(decide, oracle, cur[i], v, dist / math.sqrt(t), i, (lo, hi))  # xi_t = d_{t-1} / sqrt(t)
        cur[i] = boundary_search(decide, oracle, x[i], x_tilde, i, theta, linf, (lo, hi))  # x_t = BIN-SEARCH
        new_dist = norm.distance(cur[i] - x[i])
        better = new_dist < best_dist[i]
        best[i[better]], best_dist[i[better]] = cur[i[better]], new_dist[better]
    return where_samples(found, best, x)


@register("hopskipjump")
@dataclass(frozen=True)
class HopSkipJump(AttackConfig):
    """Config for :func:`hopskipjump` (registry name ``hopskipjump``)."""

    max_queries: int = 10_000
    steps: int | None = None
    init_evals: int = 100
    max_evals: int = 10_000
    gamma: float = 1.0
    init_queries: int = 100
    batch_size: int = 4096
    norms = NORMS
    minimal = True
    randomized = True
    black_box = True

    def __call__(self, model, x, y, *, eps=None, norm="l2", target=None, bounds=(0.0, 1.0), generator=None):
        return hopskipjump(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator,
                           **self.params())
