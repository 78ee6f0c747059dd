"""TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan 2019, "Theoretically Principled Trade-off
between Robustness and Accuracy", arXiv:1901.08573).

Threat model: white-box L-infinity ``eps``. The loss is the clean cross-entropy plus ``beta``
times the KL divergence between the clean and the adversarial output distributions,
``CE(f(x), y) + beta * KL(f(x) || f(x'))``, where ``x'`` maximises that KL inside the ball (PGD
from ``x + 0.001 * N(0, I)``, as in the authors' code). ``beta`` is the paper's ``1 / lambda``:
larger values buy robustness with clean accuracy (their CIFAR-10 setting: 6). The inner
maximisation runs in eval mode by default, like :mod:`gibbon.defenses.adversarial`'s PGD.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError
from gibbon.defenses._inner import attack_mode, pgd_example
from gibbon.defenses.registry import DefenseConfig, register


def _kl_to_clean(logits_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """Summed ``KL(p_clean || softmax(logits_adv))``: the inner maximisation's loss."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_clean, reduction="sum")


def trades_objective(eps: float, beta: float = 6.0, steps: int = 40, step_size: float = 0.01, bounds=(0.0, 1.0),
                     attack_in_eval: bool = True):
    """The TRADES training loss for :func:`gibbon.zoo.fit`.

    Args:
        eps: L-infinity radius (0.3 on MNIST). beta: weight of the KL term (``1 / lambda``).
        steps, step_size: the inner maximisation (the authors' MNIST setting: 40 x 0.01).
        bounds: input box. attack_in_eval: craft ``x'`` in eval mode.

    Returns:
        ``objective(model, x, y) -> (loss, clean_logits)``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> loss, _ = trades_objective(0.1, steps=2, step_size=0.05)(model, torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> float(loss.detach()) > 0
        True

    References:
        Zhang et al. (2019), arXiv:1901.08573, algorithm 1 (equation 5).
    """
    if not eps > 0 or not beta >= 0:
        raise GibbonInputError(f"trades: need eps > 0 and beta >= 0, got eps={eps!r}, beta={beta!r}")
    if int(steps) != steps or steps < 1 or not step_size > 0:
        raise GibbonInputError(f"trades: steps must be a whole number >= 1 and step_size > 0, got {steps!r}, {step_size!r}")

    def objective(model, x, y):
        x = x.detach()
        with attack_mode(model, attack_in_eval):
            with torch.no_grad():
                p_clean = F.softmax(model(x), dim=1)
            start = x + 0.001 * torch.randn_like(x)
            x_adv = pgd_example(model, x, p_clean, eps=eps, steps=int(steps), step_size=step_size, bounds=bounds,
                                loss_fn=_kl_to_clean, start=start)
        logits = model(x)
        robust = F.kl_div(F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return F.cross_entropy(logits, y) + beta * robust, logits

    objective.__qualname__ = f"trades_objective(eps={eps}, beta={beta}, steps={steps}, step_size={step_size})"
    return objective


@register("trades")
@dataclass(frozen=True)
class TRADESTraining(DefenseConfig):
    """``--defense trades:eps=0.3,beta=6`` (Zhang et al. 2019)."""

    paper = "Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan 2019, arXiv:1901.08573"
    eps: float = 0.3
    beta: float = 6.0
    steps: int = 40
    step_size: float = 0.01
    attack_in_eval: bool = True

    def objective(self, train):
        return trades_objective(self.eps, self.beta, self.steps, self.step_size, bounds=train.bounds,
                                attack_in_eval=self.attack_in_eval)
