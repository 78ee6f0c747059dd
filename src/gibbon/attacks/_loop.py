"""The one iterative loop behind BIM, the least-likely class method, MI-FGSM and PGD.

Projected steepest ascent (Madry et al. 2018, arXiv:1706.06083, eq. 2):
``delta <- Proj_{ball ∩ box}(delta + step_size * ascent(grad))``, with ``ascent`` the norm's
unit steepest-ascent direction (``sign`` for L-infinity). Each sample keeps its best iterate:
an adversarial one beats a non-adversarial one, then a higher loss wins. With ``early_stop``
solved samples leave the batch, so later steps only pay for the samples still robust. A step
refused by a black box's query budget (gradient estimation, :mod:`gibbon.oracles.estimators`)
ends the loop with the best iterates found so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import input_gradient, project_in_box, scale
from gibbon.core.goals import is_adversarial
from gibbon.core.losses import get_loss
from gibbon.oracles.base import QueryBudgetExceeded


@dataclass
class Best:
    """Per-sample best-so-far state, updated in place by :meth:`offer`."""

    x_adv: torch.Tensor
    success: torch.Tensor
    objective: torch.Tensor

    @classmethod
    def start(cls, x: torch.Tensor) -> "Best":
        n = x.shape[0]
        return cls(x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device),
                   torch.full((n,), float("-inf"), device=x.device))

    def offer(self, idx: torch.Tensor, x_new: torch.Tensor, success: torch.Tensor, objective: torch.Tensor) -> None:
        """Keep ``x_new[i]`` for sample ``idx[i]`` where it beats the stored one."""
        old_success, old_objective = self.success[idx], self.objective[idx]
        better = (success & ~old_success) | ((success == old_success) & (objective > old_objective))
        chosen = idx[better]
        self.x_adv.index_copy_(0, chosen, x_new[better].to(self.x_adv.dtype))
        self.success.index_copy_(0, chosen, success[better])
        self.objective.index_copy_(0, chosen, objective[better].to(self.objective.dtype))


def _subset(value, keep: torch.Tensor):
    if isinstance(value, torch.Tensor) and value.ndim >= 1:
        return value[keep]
    return value


def ascend(model, x, y, delta, *, norm, eps, steps, step_size, loss, target, bounds,
           early_stop, momentum: float = 0.0, best: Best | None = None, idx: torch.Tensor | None = None) -> Best:
    """Run ``steps`` projected ascent steps from ``x + delta``; returns the per-sample best.

    ``best``/``idx`` let restarts continue into an existing state for a subset of samples.
    ``momentum`` > 0 accumulates L1-normalised gradients (Dong et al. 2018, eq. 6).
    """
    loss_fn = get_loss(loss)
    sign = -1.0 if target is not None else 1.0  # targeted: descend the loss towards the target
    labels = target if target is not None else y
    best = best if best is not None else Best.start(x)
    idx = idx if idx is not None else torch.arange(x.shape[0], device=x.device)
    velocity = torch.zeros_like(x) if momentum else None
    for step in range(steps + 1):
        x_cur = x + delta
        try:
            if step < steps:
                grad, logits, values = input_gradient(model, x_cur, labels, loss_fn)
            else:  # the last iterate needs only a forward pass to be scored
                with torch.no_grad():
                    logits = model(x_cur)
                    values = loss_fn(logits, labels)
        except QueryBudgetExceeded:  # a black box's budget refused the step before querying: keep the best so far
            break
        success = is_adversarial(logits, y, target)
        best.offer(idx, x_cur, success, sign * values)
        if step == steps:
            break
        if early_stop and bool(success.any()):
            keep = ~success
            if not bool(keep.any()):
                break
            x, y, delta, grad, labels, idx = x[keep], y[keep], delta[keep], grad[keep], labels[keep], idx[keep]
            target, eps, step_size = _subset(target, keep), _subset(eps, keep), _subset(step_size, keep)
            velocity = velocity[keep] if velocity is not None else None
        direction = sign * grad
        if velocity is not None:
            l1 = direction.abs().reshape(direction.shape[0], -1).mean(dim=1).clamp_min(1e-12)
            velocity = momentum * velocity + scale(direction, 1.0 / l1)
            direction = velocity
        delta = project_in_box(x, delta + scale(norm.ascent(direction), step_size), norm, eps, bounds)
    return best
