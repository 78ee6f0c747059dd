"""FGSM and PGD adversarial training.

* FGSM adversarial training (Goodfellow, Shlens & Szegedy 2015, "Explaining and Harnessing
  Adversarial Examples", arXiv:1412.6572, section 6): the objective
  ``J'(x, y) = a * J(x, y) + (1 - a) * J(x + eps * sign(grad_x J(x, y)), y)`` with ``a = 0.5``;
  the adversarial example is made with the current weights and then held constant. Threat
  model: white-box L-infinity ``eps``. It is also the "FGSM-only" training of Tramer et al.
  2018 (arXiv:1705.07204), whose models learn to *mask* the single-step gradient.
* PGD adversarial training (Madry, Makelov, Schmidt, Tsipras & Vladu 2018, "Towards Deep
  Learning Models Resistant to Adversarial Attacks", arXiv:1706.06083): train only on the
  last iterate of L-infinity PGD from a uniform random start (MNIST: eps 0.3, 40 steps of
  0.01). The attack runs in **eval mode** by default (BatchNorm uses its running statistics
  and dropout is off while the example is crafted, so the adversary attacks the network that
  will be deployed; Madry et al.'s MNIST model has neither layer, where the choice is moot);
  ``attack_in_eval=false`` crafts in train mode instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError
from gibbon.defenses._inner import (attack_mode, check_craft_labels, clean_and_adversarial_loss, crafting_loss,
                                    fgsm_example, pgd_example)
from gibbon.defenses.registry import DefenseConfig, register


def _check_eps(eps: float, name: str) -> None:
    if not eps > 0:
        raise GibbonInputError(f"{name}: eps must be > 0, got {eps!r}; for clean training leave out --defense")


def fgsm_training_objective(eps: float, clean_weight: float = 0.5, bounds=(0.0, 1.0), craft_labels: str = "true"):
    """Goodfellow et al.'s ``a * J(x) + (1 - a) * J(x_fgsm)`` for :func:`gibbon.zoo.fit`.

    Args:
        eps: L-infinity radius of the FGSM examples (0.25 on MNIST in the paper, 0.3 in Tramer et al.).
        clean_weight: ``a``, the weight of the clean loss (0.5 in the paper).
        bounds: the input box the examples are clipped into.
        craft_labels: ``"true"`` (Goodfellow et al.) or ``"predicted"``: craft against the model's
            own predictions, avoiding label leaking (Kurakin et al. 2017; Tramer et al. 2018's code).

    Returns:
        ``objective(model, x, y) -> (loss, logits)``; the example is crafted in the model's
        current mode (train mode inside ``fit``, as in the paper).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> loss, logits = fgsm_training_objective(0.1)(model, torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> loss.shape, logits.shape
        (torch.Size([]), torch.Size([5, 3]))

    References:
        Goodfellow, Shlens & Szegedy (2015), arXiv:1412.6572, equation in section 6.
    """
    _check_eps(eps, "fgsm")
    if not 0.0 <= clean_weight <= 1.0:
        raise GibbonInputError(f"fgsm: clean_weight must be in [0, 1], got {clean_weight!r}")
    check_craft_labels(craft_labels, "fgsm")

    def objective(model, x, y):
        x_adv = fgsm_example(model, x, y, eps, bounds, crafting_loss(craft_labels))
        return clean_and_adversarial_loss(model, x, x_adv, y, clean_weight)

    objective.__qualname__ = (f"fgsm_training_objective(eps={eps}, clean_weight={clean_weight}, "
                              f"craft_labels={craft_labels})")
    return objective


def pgd_training_objective(eps: float, steps: int = 40, step_size: float = 0.01, bounds=(0.0, 1.0),
                           random_start: bool = True, attack_in_eval: bool = True):
    """Madry et al.'s min-max objective: cross-entropy at the last PGD iterate.

    Args:
        eps: L-infinity radius (0.3 on MNIST). steps, step_size: the inner PGD (40 x 0.01 on MNIST).
        bounds: input box. random_start: uniform start in the ball (Madry et al.: yes).
        attack_in_eval: craft in eval mode (default; see the module docstring).

    Returns:
        ``objective(model, x, y) -> (loss, logits)``, the logits being those at the adversarial points.

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> loss, _ = pgd_training_objective(0.1, steps=3, step_size=0.05)(model, torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> loss.requires_grad
        True

    References:
        Madry et al. (2018), arXiv:1706.06083, section 2 (equation 2.1) and appendix for MNIST.
    """
    _check_eps(eps, "pgd")
    if int(steps) != steps or steps < 1 or not step_size > 0:
        raise GibbonInputError(f"pgd: steps must be a whole number >= 1 and step_size > 0, got {steps!r}, {step_size!r}")

    def objective(model, x, y):
        with attack_mode(model, attack_in_eval):
            x_adv = pgd_example(model, x, y, eps=eps, steps=int(steps), step_size=step_size, bounds=bounds,
                                random_start=random_start)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits

    objective.__qualname__ = (f"pgd_training_objective(eps={eps}, steps={steps}, step_size={step_size}, "
                              f"random_start={random_start}, attack_in_eval={attack_in_eval})")
    return objective


@register("fgsm")
@dataclass(frozen=True)
class FGSMTraining(DefenseConfig):
    """``--defense fgsm:eps=0.25,clean_weight=0.5,craft_labels=true`` (Goodfellow et al. 2015)."""

    paper = "Goodfellow, Shlens & Szegedy 2015, arXiv:1412.6572"
    eps: float = 0.3
    clean_weight: float = 0.5
    craft_labels: str = "true"

    def objective(self, train):
        return fgsm_training_objective(self.eps, self.clean_weight, bounds=train.bounds,
                                       craft_labels=self.craft_labels)


@register("pgd")
@dataclass(frozen=True)
class PGDTraining(DefenseConfig):
    """``--defense pgd:eps=0.3,steps=40,step_size=0.01`` (Madry et al. 2018)."""

    paper = "Madry, Makelov, Schmidt, Tsipras & Vladu 2018, arXiv:1706.06083"
    eps: float = 0.3
    steps: int = 40
    step_size: float = 0.01
    random_start: bool = True
    attack_in_eval: bool = True

    def objective(self, train):
        return pgd_training_objective(self.eps, self.steps, self.step_size, bounds=train.bounds,
                                      random_start=self.random_start, attack_in_eval=self.attack_in_eval)
