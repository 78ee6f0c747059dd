"""Stateless building blocks: threat models (norms), per-sample losses, goals, input checks."""

from gibbon.core.checks import GibbonInputError, check_attack_inputs, check_bounds, check_eps
from gibbon.core.goals import is_adversarial
from gibbon.core.losses import cross_entropy, dlr, dlr_targeted, get_loss, margin
from gibbon.core.norms import L0, L1, L2, LINF, NORMS, Norm, get_norm

__all__ = [
    "L0", "L1", "L2", "LINF", "NORMS", "Norm", "get_norm",
    "cross_entropy", "margin", "dlr", "dlr_targeted", "get_loss",
    "is_adversarial", "GibbonInputError", "check_attack_inputs", "check_bounds", "check_eps",
]
