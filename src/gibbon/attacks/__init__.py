"""Adversarial attacks: one file per method, each a function plus a registered frozen config.

Every attack is called as ``attack(model, x, y, *, eps, norm, target, bounds, generator, ...)``
and returns ``x_adv``. ``ATTACKS`` maps registry names to config classes;
``parse_attack("pgd:steps=100,restarts=10")`` builds a config from a CLI spec.
"""

from gibbon.attacks.apgd import APGD, APGDT, apgd, apgd_targeted
from gibbon.attacks.bim import BIM, bim, kurakin_schedule
from gibbon.attacks.boundary import Boundary, boundary
from gibbon.attacks.cw import CWL2, CWLinf, cw_l2, cw_linf
from gibbon.attacks.deepfool import DeepFool, deepfool
from gibbon.attacks.fab import FAB, fab
from gibbon.attacks.fgsm import FGSM, fgsm
from gibbon.attacks.hopskipjump import HopSkipJump, hopskipjump
from gibbon.attacks.illc import ILLC, illc
from gibbon.attacks.jsma import JSMA, jsma
from gibbon.attacks.mifgsm import MIFGSM, mifgsm
from gibbon.attacks.one_pixel import OnePixel, one_pixel
from gibbon.attacks.pgd import PGD, pgd
from gibbon.attacks.registry import ATTACKS, AttackConfig, parse_attack, register
from gibbon.attacks.rfgsm import RFGSM, rfgsm
from gibbon.attacks.square import Square, square

__all__ = [
    "ATTACKS", "AttackConfig", "parse_attack", "register",
    "fgsm", "FGSM", "rfgsm", "RFGSM", "bim", "BIM", "kurakin_schedule", "illc", "ILLC",
    "mifgsm", "MIFGSM", "pgd", "PGD",
    "apgd", "APGD", "apgd_targeted", "APGDT", "fab", "FAB",
    "cw_l2", "CWL2", "cw_linf", "CWLinf", "deepfool", "DeepFool",
    "square", "Square", "one_pixel", "OnePixel", "jsma", "JSMA",
    "hopskipjump", "HopSkipJump", "boundary", "Boundary",
]
