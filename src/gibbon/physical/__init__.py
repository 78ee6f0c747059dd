"""Input-agnostic and physical-world style attacks: universal perturbations (more to come: patches,
transformation survival)."""

from gibbon.physical.universal import UniversalResult, fooling_rate, universal_perturbation

__all__ = ["UniversalResult", "fooling_rate", "universal_perturbation"]
