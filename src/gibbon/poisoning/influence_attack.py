"""Influence-guided training-set attack (Koh & Liang 2017, "Understanding Black-box Predictions via
Influence Functions", arXiv:1703.04730, section 5.2): perturb the inputs of a few training points,
within an L-inf budget, so that the retrained model misclassifies one target test point.

Moving a training input ``x`` by ``delta`` changes the target's loss by about
``(1/n) I_pert,loss(z, z_test) . delta`` with ``I_pert,loss = -grad L(z_test)^T H^-1 grad_x grad_theta L(z)``
(:func:`perturbation_influence`). The attack takes signed steps along it (the L-inf-optimal
ascent direction), projects into the budget and the valid box, retrains from the current model
and recomputes ``H^-1 grad L(z_test)`` before the next step. :func:`random_poison` puts random
signed perturbations of the same size on the same points, the baseline the attack must beat.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import grad

from gibbon.core.checks import GibbonInputError, check_bounds
from gibbon.poisoning import influence as inf


@dataclass(frozen=True)
class InfluencePoisonResult:
    """The poisoned training rows and what retraining on them did to the target.

    ``flipped`` means the retrained model's prediction for the target differs from ``target_y``."""

    poison_indices: torch.Tensor
    poisoned_x: torch.Tensor
    target_y: int
    pred_before: int
    pred_after: int
    target_loss_before: float
    target_loss_after: float
    eps: float
    steps: int

    @property
    def flipped(self) -> bool:
        return self.pred_after != self.target_y

    def to_dict(self) -> dict:
        return {"poison_indices": self.poison_indices.tolist(), "target_y": self.target_y,
                "pred_before": self.pred_before, "pred_after": self.pred_after, "flipped": self.flipped,
                "target_loss_before": self.target_loss_before, "target_loss_after": self.target_loss_after,
                "eps": self.eps, "steps": self.steps}


def perturbation_influence(model: nn.Module, train_x, train_y, target_x, target_y, *, weight_decay: float,
                           params: str = "all", method: str = "exact", damping: float = 0.0,
                           rows=None, **ihvp) -> torch.Tensor:
    """``I_pert,loss(z_i, z_test)`` for the training rows ``rows`` (default: all), shaped like their
    inputs: the gradient in ``x_i`` of ``-s_test . grad_theta L(z_i)``, ``s_test = H^-1 grad L(z_test)``.

    One double backward serves every row at once: in eval mode each row's loss depends only on
    its own input, so the gradient of the sum splits into the per-row gradients."""
    inf.check_set(train_x, train_y, "training")
    inf.check_set(target_x, target_y, "target")
    with inf.evaluating(model):
        fn = inf.loss_function(model, params)
        theta, dev = fn.theta0, fn.theta0.device
        tx, ty = train_x.to(dev), train_y.to(dev)
        g_test = inf.mean_grad(fn, theta, target_x.to(dev), target_y.to(dev))
        s_test = inf.inverse_hvp(fn, theta, tx, ty, g_test, weight_decay=weight_decay, method=method,
                                 damping=damping, **ihvp)
        rows = torch.arange(len(tx), device=dev) if rows is None else torch.as_tensor(rows, device=dev)
        xs = tx[rows].to(theta.dtype)
        ys = ty[rows]

        def influence_of(x):
            g = grad(lambda th: fn.losses(th, x, ys).sum())(theta)
            return -(g @ s_test)

        return grad(influence_of)(xs)


def _target(target_x, target_y):
    target_x = target_x if target_x.ndim == 4 else target_x[None]
    target_y = torch.as_tensor(target_y, dtype=torch.long).reshape(-1)
    if len(target_x) != 1 or len(target_y) != 1:
        raise GibbonInputError(f"pass one target test point, got {len(target_x)} inputs and {len(target_y)} labels")
    return target_x, target_y


def _predict(model, x) -> int:
    p = next(model.parameters())
    with torch.no_grad(), inf.evaluating(model):
        return int(model(x.to(device=p.device, dtype=p.dtype)).argmax(1))


def _check(n_poison, eps, steps, n):
    if not 1 <= int(n_poison) <= n:
        raise GibbonInputError(f"n_poison must be in [1, {n}], got {n_poison!r}")
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise GibbonInputError(f"eps (the L-inf budget) must be > 0, got {eps!r}; e.g. 0.1 on [0, 1] inputs")
    if int(steps) < 1:
        raise GibbonInputError(f"steps must be >= 1, got {steps!r}")


def influence_poison(train_fn, model: nn.Module, train_x, train_y, target_x, target_y, *, weight_decay: float,
                     n_poison: int = 1, eps: float = 0.1, steps: int = 10, step_size: float | None = None,
                     params: str = "all", method: str = "exact", damping: float = 0.0, bounds=(0.0, 1.0),
                     **ihvp) -> InfluencePoisonResult:
    """Perturb the ``n_poison`` training inputs with the largest ``||I_pert,loss||_1`` (the first-order
    gain of an L-inf step) to raise the target's loss; retrain with ``train_fn(x, y, init)`` after each
    of ``steps`` signed steps of ``step_size`` (default ``2.5 eps / steps``). ``model`` is the model
    trained on the clean set; labels are never changed. Returns the final retrained model's verdict."""
    target_x, target_y = _target(target_x, target_y)
    inf.check_set(train_x, train_y, "training")
    _check(n_poison, eps, steps, len(train_x))
    lo, hi = check_bounds(bounds)
    step_size = float(step_size or 2.5 * eps / steps)
    kw = dict(weight_decay=weight_decay, params=params, method=method, damping=damping, **ihvp)
    first = perturbation_influence(model, train_x, train_y, target_x, target_y, **kw)
    rows = torch.argsort(first.flatten(1).abs().sum(1), descending=True)[:int(n_poison)].cpu()
    x = train_x.clone()
    x0 = train_x[rows].clone()
    current = model
    for _ in range(int(steps)):
        g = perturbation_influence(current, x, train_y, target_x, target_y, rows=rows, **kw).to(x.dtype).to(x.device)
        step = x[rows] + step_size * g.sign()
        x[rows] = torch.minimum(torch.maximum(step, x0 - eps), x0 + eps).clamp(lo, hi)
        current = train_fn(x, train_y, current)
    return _result(model, current, rows, x, target_x, target_y, eps, int(steps))


def random_poison(train_fn, model: nn.Module, train_x, train_y, target_x, target_y, rows, *, eps: float,
                  bounds=(0.0, 1.0), seed: int = 0) -> InfluencePoisonResult:
    """The baseline: ``+-eps`` random signs on the same ``rows`` (clipped to the box), retrained once."""
    target_x, target_y = _target(target_x, target_y)
    rows = torch.as_tensor(rows, dtype=torch.long).reshape(-1).cpu()
    _check(len(rows), eps, 1, len(train_x))
    lo, hi = check_bounds(bounds)
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, train_x[rows].shape, generator=gen).to(train_x) * 2 - 1
    x = train_x.clone()
    x[rows] = (x[rows] + eps * signs).clamp(lo, hi)
    return _result(model, train_fn(x, train_y, model), rows, x, target_x, target_y, eps, 1)


def _result(model, poisoned_model, rows, x, target_x, target_y, eps, steps) -> InfluencePoisonResult:
    return InfluencePoisonResult(rows, x[rows].detach().cpu(), int(target_y), _predict(model, target_x),
                                 _predict(poisoned_model, target_x), inf.test_loss(model, target_x, target_y),
                                 inf.test_loss(poisoned_model, target_x, target_y), float(eps), steps)
