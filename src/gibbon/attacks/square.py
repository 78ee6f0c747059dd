"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, arXiv:1912.00986).

Black-box (score-based), budget attack in L-infinity or L2, targeted or untargeted. Random
search on the margin loss: each iteration proposes a change confined to a random square window
(side set by the fraction ``p`` of pixels, halved on a fixed schedule) and keeps it if the loss
decreases. L-infinity starts from vertical stripes of +-eps and sets the window to one +-eps
colour per channel (Alg. 2); L2 starts from a grid of "pseudo-Gaussian" bumps and moves mass
between two windows keeping ``||delta||_2 = eps`` (Alg. 3). The model is seen only through an
:class:`~gibbon.oracles.Oracle`: no gradient, at most ``max_queries`` rows per sample (the
initialization included), and only still-unsolved samples are queried.

Differences from the reference code: windows are drawn per image (not one per batch), every
valid window position can be drawn, the side is kept below the image side for tiny images, the
L2 initialization uses only whole tiles, and a candidate that is adversarial beats a stored
non-adversarial one (the loss decides otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch

from gibbon.attacks._common import default_generator, prepare
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.checks import GibbonInputError, check_label_range
from gibbon.core.goals import is_adversarial
from gibbon.core.losses import get_loss, margin
from gibbon.core.norms import L2, get_norm
from gibbon.oracles import as_oracle, requires_scores

NORMS = ("linf", "l2")
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of 10,000 iterations (Sec. 3.3)


def p_schedule(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels changed at iteration ``it``: halved at 10, 50, ..., 8000 of 10,000, rescaled."""
    it = int(it / n_iters * 10000)
    return p_init / 2 ** sum(it > t for t in _HALVINGS)


def _randint(high: int, shape, gen, device) -> torch.Tensor:
    return torch.randint(high, shape, generator=gen, device=gen.device).to(device)


def _signs(shape, gen, like) -> torch.Tensor:
    return (2 * _randint(2, shape, gen, like.device) - 1).to(like.dtype)


def _windows(n: int, s: int, h: int, w: int, gen, device):
    """A random ``s x s`` window per image: its corner ``(top, left)``, each row's and column's
    offset inside it (``[n, h]``, ``[n, w]``, clamped) and its mask ``[n, 1, h, w]``."""
    top, left = _randint(h - s + 1, (n,), gen, device), _randint(w - s + 1, (n,), gen, device)
    rows = torch.arange(h, device=device)[None] - top[:, None]
    cols = torch.arange(w, device=device)[None] - left[:, None]
    mask = ((rows >= 0) & (rows < s))[:, None, :, None] & ((cols >= 0) & (cols < s))[:, None, None, :]
    return (top, left), rows.clamp(0, s - 1), cols.clamp(0, s - 1), mask


def _place(patch: torch.Tensor, rows, cols, mask) -> torch.Tensor:
    """Put ``patch [n, c, s, s]`` at each image's window; zero elsewhere (``[n, c, h, w]``)."""
    n, c, s, _ = patch.shape
    out = patch.gather(2, rows[:, None, :, None].expand(n, c, rows.shape[1], s))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, rows.shape[1], cols.shape[1]))
    return out * mask


def _extract(t: torch.Tensor, corner, s: int) -> torch.Tensor:
    """The window at ``corner`` of each image of ``t [n, c, h, w]`` as ``[n, c, s, s]``."""
    n, c, _, w = t.shape
    span = torch.arange(s, device=t.device)
    out = t.gather(2, (corner[0][:, None] + span)[:, None, :, None].expand(n, c, s, w))
    return out.gather(3, (corner[1][:, None] + span)[:, None, None, :].expand(n, c, s, s))


def _rectangle(rows: int, cols: int, like) -> torch.Tensor:
    """Concentric rectangles weighted 1/(k+1)^2, unit L2 norm (reference ``pseudo_gaussian_pert_rectangles``)."""
    delta = torch.zeros(rows, cols, dtype=like.dtype, device=like.device)
    r, c = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        delta[max(r, 0):min(r + 2 * k + 1, rows), max(c, 0):min(c + 2 * k + 1, cols)] += 1.0 / (k + 1) ** 2
        r, c = r - 1, c - 1
    return delta / delta.norm().clamp_min(1e-12)


def _bumps(s: int, gen, like) -> torch.Tensor:
    """Two opposite-sign rectangles stacked (reference ``meta_pseudo_gaussian_pert``), randomly transposed."""
    delta = torch.cat([_rectangle(s // 2, s, like), -_rectangle(s - s // 2, s, like)])
    delta = delta / delta.norm().clamp_min(1e-12)
    return delta.T if bool(_randint(2, (), gen, like.device)) else delta


def _linf_init(x, eps, gen):
    n, c, _, w = x.shape
    return _signs((n, c, 1, w), gen, x) * eps  # vertical stripes (Sec. 3.1)


def _l2_init(x, eps, gen):
    n, c, h, w = x.shape
    s = max(h // 5, 1)
    delta = torch.zeros_like(x)
    start = (h - 5 * s) // 2 if h >= 5 * s else 0
    for top in range(start, h - s + 1, s):
        for left in range(start, w - s + 1, s):
            delta[:, :, top:top + s, left:left + s] += _bumps(s, gen, x) * _signs((n, c, 1, 1), gen, x)
    return delta / L2.distance(delta).clamp_min(1e-12).reshape(-1, 1, 1, 1) * eps


def _linf_step(x, x_best, eps, p, lo, hi, gen):
    n, c, h, w = x.shape
    s = max(min(round(math.sqrt(p * h * w)), min(h, w) - 1), 1)
    corner, _, _, mask = _windows(n, s, h, w, gen, x.device)
    colours = _signs((n, c, 1, 1), gen, x) * eps
    # Redraw the colours that would leave the window unchanged (e.g. -eps on a window of black
    # pixels), checking only the window and only the samples still unchanged: on MNIST half of
    # the draws are such no-ops, and re-checking whole images of the whole batch each round
    # cost more than the model's forward.
    x_win, best_win = _extract(x, corner, s), _extract(x_best, corner, s)
    redraw = torch.arange(n, device=x.device)
    for _ in range(10):
        new_win = (x_win[redraw] + colours[redraw]).clamp(lo, hi)
        same = ((new_win - best_win[redraw]).abs() < 1e-7).flatten(1).all(1)
        redraw = redraw[same]
        if redraw.numel() == 0:
            break
        colours[redraw] = _signs((redraw.numel(), c, 1, 1), gen, x) * eps[redraw]
    return torch.where(mask, (x + colours).clamp(lo, hi), x_best)


def _l2_step(x, x_best, eps, p, lo, hi, gen):
    n, c, h, w = x.shape
    s = round(math.sqrt(p * h * w))
    s = max(min(s + 1 - s % 2 if s >= 3 else 3, min(h, w) - 1), 1)  # odd side >= 3
    delta = x_best - x
    corner, rows, cols, m1 = _windows(n, s, h, w, gen, x.device)
    *_, m2 = _windows(n, s, h, w, gen, x.device)
    norm_window = (delta * m1).square().sum((2, 3), keepdim=True).sqrt()
    norm_image = L2.distance(delta).reshape(-1, 1, 1, 1)
    norm_both = (delta * (m1 | m2)).square().sum((2, 3), keepdim=True).sqrt()
    new = _bumps(s, gen, x) * _signs((n, c, 1, 1), gen, x)
    new = new + _extract(delta, corner, s) / (norm_window + 1e-10)
    budget = ((eps ** 2 - norm_image ** 2).clamp_min(0) / c + norm_both ** 2).sqrt()  # Alg. 3, line 9
    new = new / new.square().sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
    delta = torch.where(m1, _place(new, rows, cols, m1), delta.masked_fill(m2, 0.0))
    delta = delta / L2.distance(delta).clamp_min(1e-12).reshape(-1, 1, 1, 1) * eps
    return (x + L2.project(delta, eps.reshape(-1))).clamp(lo, hi)


def square(model, x, y, *, eps, norm="linf", max_queries: int = 5000, p_init: float = 0.8, loss="margin",
           target=None, bounds=(0.0, 1.0), early_stop: bool = True, generator=None) -> torch.Tensor:
    """Square Attack: random search with square-shaped updates.

    Args:
        model: callable ``x -> scores`` or an :class:`~gibbon.oracles.Oracle`; only queried.
        x: images ``(B, C, H, W)`` in ``bounds``. y: true labels ``(B,)``.
        eps: radius (float or ``(B,)``). norm: ``"linf"`` or ``"l2"``.
        max_queries: per-sample query budget N, initialization included (paper: 10,000).
        p_init: initial fraction of pixels in the window (paper: 0.05 Linf / 0.1 L2 on ImageNet;
            0.8 here as for small images / the reference's MNIST setting).
        loss: ``"margin"`` (paper's choice) or ``"ce"``; minimised as ``z_y - max_{j!=y} z_j``
            untargeted, ``max_{j!=t} z_j - z_t`` targeted (``ce``: ``-CE(y)`` / ``CE(t)``).
        target: target classes ``(B,)`` or None. bounds: valid box.
        early_stop: stop querying a sample once it is adversarial.
        generator: randomness (a fixed seed-0 generator when None).

    Returns:
        ``x_adv`` shaped like ``x``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
        >>> x_adv = square(model, x, y, eps=0.1, max_queries=20)
        >>> bool(((x_adv - x).abs() <= 0.1 + 1e-6).all())
        True
    """
    lo, hi = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS)
    if x.ndim != 4:
        raise GibbonInputError(f"square attacks images (B, C, H, W); got shape {tuple(x.shape)}")
    if max_queries < 1:
        raise GibbonInputError("square needs max_queries >= 1")
    max_queries = int(max_queries)
    norm, gen, x = get_norm(norm).name, default_generator(generator), x.detach()
    n = x.shape[0]
    oracle = as_oracle(model, max_queries=max_queries, n=n)
    eps = torch.as_tensor(eps, dtype=x.dtype).to(x.device).expand(n).reshape(n, 1, 1, 1)
    labels = target if target is not None else y
    loss_fn = partial(margin, confidence=None) if loss == "margin" else get_loss(loss)
    sign = 1.0 if target is not None else -1.0  # minimise: descend towards the target / away from y

    checked = []

    def score(x_new, idx):
        scores = requires_scores(oracle(x_new, idx), "square")
        if not checked:  # the first answer tells the class count: no query spent to learn it
            check_label_range(int(scores.shape[1]), y, target)
            checked.append(True)
        success = is_adversarial(scores, y[idx], None if target is None else target[idx])
        return sign * loss_fn(scores, labels[idx]), success

    step = _linf_step if norm == "linf" else _l2_step
    x_best = x.clone()
    best_loss = torch.full((n,), math.inf, device=x.device)
    success = torch.zeros(n, dtype=torch.bool, device=x.device)
    started = oracle.affordable(torch.arange(n, device=x.device), 1)
    idx = started.nonzero().squeeze(1)
    if idx.numel():
        init = _linf_init if norm == "linf" else _l2_init
        x_best[idx] = (x[idx] + init(x[idx], eps[idx], gen)).clamp(lo, hi)
        best_loss[idx], success[idx] = score(x_best[idx], idx)
    for it in range(max_queries - 1):
        idx = (started & (~success if early_stop else True)).nonzero().squeeze(1)
        idx = idx[oracle.affordable(idx, 1)]  # one query each; a shared budget may not pay for all
        if idx.numel() == 0:
            break
        x_new = step(x[idx], x_best[idx], eps[idx], p_schedule(p_init, it, max_queries), lo, hi, gen)
        new_loss, new_success = score(x_new, idx)
        better = (new_success & ~success[idx]) | ((new_success == success[idx]) & (new_loss < best_loss[idx]))
        keep = idx[better]
        x_best[keep], best_loss[keep], success[keep] = x_new[better], new_loss[better], new_success[better]
    return x_best


@register("square")
@dataclass(frozen=True)
class Square(AttackConfig):
    """Config for :func:`square` (registry name ``square``)."""

    max_queries: int = 5000
    p_init: float = 0.8
    loss: str = "margin"
    early_stop: bool = True
    norms = NORMS
    randomized = True
    black_box = True

    def __call__(self, model, x, y, *, eps, norm="linf", target=None, bounds=(0.0, 1.0), generator=None):
        return square(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator,
                      **self.params())
