"""Input-agnostic and physical-world style attacks: survival of a simulated photo
(:mod:`gibbon.physical.photo`), universal perturbations and adversarial patches. Guide: ``docs/physical.md``."""

from gibbon.physical.patch import PatchResult, patch_success, train_patch
from gibbon.physical.universal import UniversalResult, fooling_rate, universal_perturbation

__all__ = ["UniversalResult", "fooling_rate", "universal_perturbation", "PatchResult", "train_patch", "patch_success"]
