"""Auto-PGD, APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", arXiv:2003.01690), and l1-APGD (Croce & Hein 2021,
"Mind the box: l1-APGD for sparse adversarial attacks on image classifiers", arXiv:2103.01208).

White-box, budget attack in L-infinity, L2 or L1. ``apgd-ce`` ascends cross-entropy (or DLR),
untargeted or towards a given ``target``; ``apgd-t`` is AutoAttack's APGD-T: the targeted DLR
loss towards each of the ``n_target_classes`` classes ranked highest on the clean input, each
target run only on the samples still robust. Algorithm 1 of the 2020 paper: step size
``2 * eps``, momentum 0.75, and at the checkpoints of :func:`checkpoints` the step is halved and
the iterate restarts from the best point when the loss rose on fewer than rho = 0.75 of the steps
(condition 1) or neither the step nor the best loss changed since the last checkpoint (condition
2). For L1 the 2021 paper's version: sparse steps on the top-k coordinates with k adapted to the
sparsity of the best point, the exact projection onto the L1 ball intersected with the box, and
its step-size rule (reset when the best point got > 5% sparser, else divided by 1.5, never below
eps / 10). Differences from AutoAttack's code: k rounds down (``floor``, at least 1) so that k can
reach 1, which a linear model's 1-sparse optimum needs; no eps schedule (3 eps, 2 eps, eps); the
random start is uniform in the ball, not on its sphere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import (clamp_to_box, default_generator, input_gradient, prepare, project_in_box, scale,
                                    where_samples)
from gibbon.attacks._loop import Best
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.checks import GibbonInputError
from gibbon.core.losses import dlr_targeted, get_loss
from gibbon.core.norms import get_norm
from gibbon.oracles.base import QueryBudgetExceeded

NORMS = ("linf", "l2", "l1")
MOMENTUM = 0.75  # alpha of Algorithm 1
RHO = 0.75  # condition 1: fraction of loss-increasing steps below which the step is halved


def checkpoints(steps: int) -> list[int]:
    """Iterations ``w_j = ceil(p_j * steps)`` where APGD may halve its step (2020 paper, sec. 3).

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` while
    ``p_j < 1``; computed in exact hundredths (0.22 * 100 is 22.000000000000004 in floats).

    Example:
        >>> checkpoints(100)
        [0, 22, 41, 57, 70, 80, 87, 93, 99]
    """
    out, prev, p = [0], 0, 22
    while p < 100:
        w = -(-p * steps // 100)
        if w > out[-1]:
            out.append(w)
        prev, p = p, p + max(p - prev - 3, 6)
    return out


def halve_step(increases, interval: int, reduced_before, best_now, best_before, rho: float = RHO) -> torch.Tensor:
    """Per-sample ``bool[B]``: the 2020 paper's condition 1 (the loss rose on fewer than ``rho`` of
    the ``interval`` steps) or condition 2 (step not reduced and best loss not improved) holds."""
    return (increases < rho * interval) | (~reduced_before & (best_now <= best_before))


def project_l1_box(x: torch.Tensor, delta: torch.Tensor, eps, bounds) -> torch.Tensor:
    """Exact Euclidean projection of ``delta`` onto {L1 ball of radius eps} ∩ {x + delta in box}.

    The solution is ``sign(v) * clip(|v| - lam, 0, cap)`` with ``cap`` the room left in the box
    (2021 paper, sec. 3); ``lam`` is found exactly from the sorted breakpoints of that
    piecewise-linear function of ``lam``. Computed in float64.
    """
    v, xf = delta.reshape(len(x), -1).double(), x.reshape(len(x), -1).double()
    eps = torch.as_tensor(eps, dtype=v.dtype, device=v.device).expand(len(x))
    cap = torch.where(v >= 0, bounds[1] - xf, xf - bounds[0]).clamp_min(0)
    a = v.abs()
    total0 = torch.minimum(a, cap).sum(dim=1)
    points = torch.cat(((a - cap).clamp_min(0), a), dim=1)  # each coordinate shrinks on [a - cap, a]
    weights = torch.cat((torch.ones_like(a), -torch.ones_like(a)), dim=1)
    points, order = points.sort(dim=1)
    active = torch.nn.functional.pad(weights.gather(1, order).cumsum(dim=1)[:, :-1], (1, 0))
    gaps = points - torch.nn.functional.pad(points[:, :-1], (1, 0))
    total = total0[:, None] - (active * gaps).cumsum(dim=1)  # the L1 norm at each breakpoint
    k = (total <= eps[:, None]).int().argmax(dim=1, keepdim=True)
    lam = points.gather(1, k) - (eps[:, None] - total.gather(1, k)) / active.gather(1, k).clamp_min(1)
    lam = torch.where((total0 > eps)[:, None], lam, torch.zeros_like(lam))
    out = v.sign() * torch.minimum((a - lam).clamp_min(0), cap)
    return out.to(delta.dtype).reshape(delta.shape)


class _State:
    """Per-sample tensors of one APGD run, all ``[n, ...]``; ``keep`` drops solved samples."""

    def __init__(self, **tensors):
        self.__dict__.update(tensors)

    def keep(self, mask: torch.Tensor) -> "_State":
        return _State(**{name: value[mask] for name, value in vars(self).items()})


def _next_point(s: _State, norm, bounds, first: bool) -> torch.Tensor:
    """Algorithm 1's step ``z`` and momentum update (L-inf, L2); for L1 the 2021 paper's sparse step."""
    if norm.name == "l1":
        g = s.grad.reshape(len(s.x), -1).abs()
        k = (s.topk * g.shape[1]).floor().clamp(1, g.shape[1]).long()
        threshold = g.sort(dim=1, descending=True).values.gather(1, k[:, None] - 1)
        direction = s.grad.sign() * (g >= threshold).reshape(s.grad.shape)
        size = direction.abs().reshape(len(s.x), -1).sum(dim=1).clamp_min(1)
        z = s.cur + scale(direction, s.step / size)
        return s.x + project_l1_box(s.x, z - s.x, s.eps, bounds)
    z = s.x + project_in_box(s.x, s.cur - s.x + scale(norm.ascent(s.grad), s.step), norm, s.eps, bounds)
    a = 1.0 if first else MOMENTUM
    moved = s.cur + a * (z - s.cur) + (1 - a) * (s.cur - s.prev)
    return s.x + project_in_box(s.x, moved - s.x, norm, s.eps, bounds)


def _checkpoint(s: _State, norm, interval: int) -> None:
    """Step-size update at a checkpoint; samples whose step changes restart from their best point."""
    if norm.name == "l1":  # 2021 paper: adapt k to the best point's sparsity, reset or shrink the step
        sparsity = (s.best - s.x).reshape(len(s.x), -1).ne(0).sum(dim=1).to(s.step.dtype)
        restart = sparsity / s.sparsity.clamp_min(1) < 0.95
        s.topk = sparsity / s.sparsity.new_tensor(s.x[0].numel()) / 1.5
        s.step = torch.where(restart, s.eps, s.step / 1.5).clamp(s.eps / 10, s.eps)
        s.sparsity = sparsity
    else:
        restart = halve_step(s.increases, interval, s.reduced, s.best_loss, s.best_at_check)
        s.step = torch.where(restart, s.step / 2, s.step)
        s.reduced, s.best_at_check, s.increases = restart, s.best_loss.clone(), torch.zeros_like(s.increases)
    s.cur, s.grad = where_samples(restart, s.best, s.cur), where_samples(restart, s.best_grad, s.grad)
    s.loss = torch.where(restart, s.best_loss, s.loss)


def _run(model, x, labels, start, *, objective, succeeded, norm, eps, steps, bounds, early_stop,
         best: Best, idx) -> _State:
    """One APGD run from ``start``; offers every iterate to ``best``; returns the final state."""
    grad, logits, loss = input_gradient(model, start, labels, objective)
    best.offer(idx, start, succeeded(logits, labels), loss)
    n, l1 = len(x), norm.name == "l1"
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(n).clone()
    # best: x_max, the highest-loss iterate (with its gradient and loss f_max); topk and sparsity: L1 only
    s = _State(x=x, labels=labels, idx=idx, eps=eps, cur=start, prev=start, grad=grad, loss=loss, best=start,
               best_grad=grad, best_loss=loss, step=(1.0 if l1 else 2.0) * eps, increases=torch.zeros_like(eps),
               reduced=torch.zeros(n, dtype=torch.bool, device=x.device), best_at_check=loss,
               topk=torch.full_like(eps, 0.2), sparsity=torch.full_like(eps, float(x[0].numel())))
    every = max(int(0.04 * steps), 1)
    marks = set(range(every, steps + 1, every)) if l1 else set(checkpoints(steps)[1:])
    last_mark = 0
    for i in range(steps):
        s.prev, s.cur = s.cur, _next_point(s, norm, bounds, first=i == 0)
        if i < steps - 1:
            grad, logits, loss = input_gradient(model, s.cur, s.labels, objective)
        else:  # the last iterate is only scored
            with torch.no_grad():
                logits = model(s.cur)
                grad, loss = s.grad, get_loss(objective)(logits, s.labels)
        success = succeeded(logits, s.labels)
        best.offer(s.idx, s.cur, success, loss)
        s.increases = s.increases + (loss > s.loss)
        s.loss, s.grad = loss, grad
        up = loss > s.best_loss
        s.best, s.best_grad = where_samples(up, s.cur, s.best), where_samples(up, grad, s.best_grad)
        s.best_loss = torch.where(up, loss, s.best_loss)
        if i + 1 in marks:
            _checkpoint(s, norm, i + 1 - last_mark)
            last_mark = i + 1
        if early_stop and bool(success.any()):
            if bool(success.all()):
                break
            s = s.keep(~success)
    return s


def _attack(model, x, label_sets, *, objective, succeeded, norm, eps, steps, restarts, bounds,
            early_stop, generator) -> torch.Tensor:
    """APGD for each label set (one per target), ``restarts`` times, on the samples still robust."""
    best = Best.start(clamp_to_box(x, bounds))
    try:
        with torch.no_grad():
            clean = succeeded(model(x), label_sets[0])
        best.offer(torch.arange(len(x), device=x.device), x, clean,
                   torch.full((len(x),), float("-inf"), device=x.device))
        for labels in label_sets:
            for _ in range(restarts):
                todo = (~best.success).nonzero().squeeze(1)
                if todo.numel() == 0:
                    return best.x_adv
                sub = lambda v: v[todo] if isinstance(v, torch.Tensor) and v.ndim == 1 else v  # noqa: E731
                x_sub = x[todo]
                start = clamp_to_box(x_sub + norm.sample(x_sub, sub(eps), generator), bounds)
                _run(model, x_sub, labels[todo], start, objective=objective, succeeded=succeeded, norm=norm,
                     eps=sub(eps), steps=steps, bounds=bounds, early_stop=early_stop, best=best, idx=todo)
    except QueryBudgetExceeded:  # a black box's budget refused a step before querying: every iterate so far is offered
        pass
    return best.x_adv


def _setup(model, x, y, eps, norm, bounds, target, steps, restarts):
    bounds = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS,
                     model=model)
    if steps < 1 or restarts < 1:
        raise GibbonInputError("apgd needs steps >= 1 and restarts >= 1")
    return bounds, get_norm(norm)


def _untargeted(z, labels):
    return z.argmax(dim=1) != labels[:, 0]


def _reached(z, labels):
    return z.argmax(dim=1) == labels[:, 1]


def apgd(model, x, y, *, eps, norm="linf", steps: int = 100, restarts: int = 1, loss="ce", target=None,
         bounds=(0.0, 1.0), early_stop: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """APGD on ``loss`` (APGD-CE; APGD-DLR with ``loss="dlr"``) within the eps-ball.

    Args:
        model: callable ``x -> logits``. x: inputs ``(B, ...)`` in ``bounds``. y: true labels ``(B,)``.
        eps: ball radius (float or ``(B,)``). norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        steps: iterations N per run. restarts: runs; later ones attack only unsolved samples.
        loss: per-sample loss name or function, ascended (descended towards ``target`` if given).
        target: target classes ``(B,)`` or None. bounds: valid input box.
        early_stop: stop updating a sample once it is adversarial.
        generator: randomness of the uniform random starts (a seed-0 generator when None).

    Returns:
        ``x_adv`` shaped like ``x``; samples already misclassified come back unchanged.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
        >>> bool(((apgd(model, x, y, eps=0.1, steps=10) - x).abs() <= 0.1 + 1e-6).all())
        True
    """
    bounds, norm = _setup(model, x, y, eps, norm, bounds, target, steps, restarts)
    loss_fn, x = get_loss(loss), x.detach()
    if target is None:
        labels, succeeded, objective = y[:, None], _untargeted, lambda z, lab: loss_fn(z, lab[:, 0])
    else:
        labels, succeeded, objective = torch.stack((y, target), 1), _reached, lambda z, lab: -loss_fn(z, lab[:, 1])
    return _attack(model, x, [labels], objective=objective, succeeded=succeeded, norm=norm, eps=eps, steps=steps,
                   restarts=restarts, bounds=bounds, early_stop=early_stop, generator=default_generator(generator))


def apgd_targeted(model, x, y, *, eps, norm="linf", steps: int = 100, restarts: int = 1, n_target_classes: int = 9,
                  target=None, bounds=(0.0, 1.0), early_stop: bool = False,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """APGD-T: APGD on the targeted DLR loss (2020 paper, eq. 7) over several target classes.

    Without ``target`` the targets are, in turn, the ``n_target_classes`` classes other than
    ``y`` with the highest clean logits, each run on the samples still correctly classified
    (success = any label but ``y``); with ``target`` only that class, and success = reaching it.
    Other arguments as :func:`apgd`; needs at least 4 classes.
    """
    bounds, norm = _setup(model, x, y, eps, norm, bounds, target, steps, restarts)
    x = x.detach()
    if target is None:
        with torch.no_grad():
            others = model(x).scatter(1, y[:, None], float("-inf"))
        ranked = others.argsort(dim=1, descending=True)[:, : max(1, min(n_target_classes, others.shape[1] - 1))]
        label_sets, succeeded = [torch.stack((y, t), 1) for t in ranked.T], _untargeted
    else:
        label_sets, succeeded = [torch.stack((y, target), 1)], _reached
    return _attack(model, x, label_sets, objective=lambda z, lab: dlr_targeted(z, lab[:, 0], lab[:, 1]),
                   succeeded=succeeded, norm=norm, eps=eps, steps=steps, restarts=restarts, bounds=bounds,
                   early_stop=early_stop, generator=default_generator(generator))


@register("apgd-ce")
@dataclass(frozen=True)
class APGD(AttackConfig):
    """Config for :func:`apgd` (registry name ``apgd-ce``)."""

    steps: int = 100
    restarts: int = 1
    loss: str = "ce"
    early_stop: bool = False
    norms = NORMS
    randomized = True

    def __call__(self, model, x, y, *, eps, norm="linf", target=None, bounds=(0.0, 1.0), generator=None):
        return apgd(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator, **self.params())


@register("apgd-t")
@dataclass(frozen=True)
class APGDT(AttackConfig):
    """Config for :func:`apgd_targeted` (registry name ``apgd-t``)."""

    steps: int = 100
    restarts: int = 1
    n_target_classes: int = 9
    early_stop: bool = False
    norms = NORMS
    randomized = True

    def __call__(self, model, x, y, *, eps, norm="linf", target=None, bounds=(0.0, 1.0), generator=None):
        return apgd_targeted(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator,
                             **self.params())
