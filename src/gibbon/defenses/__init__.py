"""Defenses: training objectives that harden a model, plugged into :func:`gibbon.zoo.fit`, and
the registry behind ``gibbon train --defense NAME:key=value``.

    >>> from gibbon import zoo
    >>> from gibbon.defenses import fast_objective, parse_defense
    >>> zoo.fit(model, train, epochs=10, batch_size=100, lr=5e-3, schedule="cyclic",
    ...         objective=fast_objective(0.3, step_size=0.375))  # doctest: +SKIP
    >>> parse_defense("pgd:eps=0.3,steps=40").fit(model, train, epochs=10)  # doctest: +SKIP

Registered names: ``fgsm`` (Goodfellow et al. 2015), ``pgd`` (Madry et al. 2018), ``fast``
(Wong et al. 2020), ``trades`` (Zhang et al. 2019), ``ensemble`` (Tramer et al. 2018),
``distill`` (Papernot et al. 2016), ``vat`` (Miyato et al. 2018), ``noise`` (Gaussian
augmentation for randomized smoothing, Cohen et al. 2019), ``dp`` (DP-SGD, Abadi et al. 2016, through
Opacus). Input transformations
(:mod:`~gibbon.defenses.transforms`) and the attacker's wrappers that go through them
(:class:`BPDA`, :class:`StraightThrough`, :class:`EOT`); randomized smoothing (:func:`certify`).
"""

from gibbon.defenses.adversarial import (FGSMTraining, PGDTraining, fgsm_training_objective,
                                         pgd_training_objective)
from gibbon.defenses.distillation import DefensiveDistillation, distillation_objective, temperature_objective
from gibbon.defenses.ensemble import EnsembleTraining, ensemble_training_objective
from gibbon.defenses.fast import (MNIST_RECIPE, CatastrophicOverfitting, FastTraining, fast_objective,
                                  overfitting_guard)
from gibbon.defenses.registry import DEFENSES, DefenseConfig, parse_defense, register
from gibbon.defenses.trades import TRADESTraining, trades_objective
from gibbon.defenses.noise import NoiseTraining, noise_objective
from gibbon.defenses.dp_sgd import DPSGDTraining, noise_for_epsilon, privacy_spent, train_dp
from gibbon.defenses.vat import VATTraining, vat_loss, vat_objective, vat_semi_supervised_objective
from gibbon.defenses.transforms import (BitDepthReduction, InputTransformed, JpegCompression, MedianSmoothing,
                                        RandomResizePad)
from gibbon.defenses.bpda import BPDA, straight_through
from gibbon.defenses.straight_through import StraightThrough
from gibbon.defenses.eot import EOT
from gibbon.defenses.smoothing import Certificate, SmoothedPrediction, certified_accuracy, certify, smoothed_predict

__all__ = [
    "DEFENSES", "DefenseConfig", "parse_defense", "register",
    "DPSGDTraining", "train_dp", "privacy_spent", "noise_for_epsilon",
    "fast_objective", "FastTraining", "overfitting_guard", "CatastrophicOverfitting", "MNIST_RECIPE",
    "FGSMTraining", "fgsm_training_objective", "PGDTraining", "pgd_training_objective",
    "TRADESTraining", "trades_objective", "EnsembleTraining", "ensemble_training_objective",
    "DefensiveDistillation", "distillation_objective", "temperature_objective",
    "NoiseTraining", "noise_objective", "VATTraining", "vat_loss", "vat_objective", "vat_semi_supervised_objective",
    "BitDepthReduction", "MedianSmoothing", "JpegCompression", "RandomResizePad", "InputTransformed",
    "BPDA", "straight_through", "StraightThrough", "EOT",
    "certify", "smoothed_predict", "certified_accuracy", "Certificate", "SmoothedPrediction",
]
