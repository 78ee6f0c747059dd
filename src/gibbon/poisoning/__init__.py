"""Training-set poisoning and backdoors, and their detection. User guide: ``docs/poisoning.md``.

    >>> from gibbon.poisoning import Trigger, badnets_poison, attack_success_rate
    >>> poisoned = badnets_poison(train, Trigger(size=4), target=0, rate=0.01)  # doctest: +SKIP
    >>> attack_success_rate(model_trained_on(poisoned.dataset), test, Trigger(size=4), 0)  # doctest: +SKIP
"""

from gibbon.poisoning.activation_clustering import activation_clustering
from gibbon.poisoning.backdoor import PoisonedSet, attack_success_rate, badnets_poison
from gibbon.poisoning.detection import DetectionResult, detection_metrics
from gibbon.poisoning.clean_label import CleanLabelResult
from gibbon.poisoning.feature_collision import feature_collision, feature_collision_experiment
from gibbon.poisoning.features import penultimate_features
from gibbon.poisoning.fine_pruning import FinePruneResult, fine_prune
from gibbon.poisoning.gradient_matching import gradient_matching, gradient_matching_experiment
from gibbon.poisoning.influence import (LooResult, influence_scores, lbfgs_fit, leave_one_out_check,
                                       most_influential, predicted_loo_change)
from gibbon.poisoning.influence_attack import InfluencePoisonResult, influence_poison
from gibbon.poisoning.label_flip import class_accuracy, flip_labels
from gibbon.poisoning.spectral import robust_whiten, spectral_signatures
from gibbon.poisoning.triggers import Trigger, apply_trigger, parse_trigger

__all__ = ["Trigger", "apply_trigger", "parse_trigger", "PoisonedSet", "badnets_poison", "attack_success_rate",
           "flip_labels", "class_accuracy", "penultimate_features", "DetectionResult", "detection_metrics",
           "spectral_signatures", "robust_whiten", "activation_clustering", "FinePruneResult", "fine_prune",
           "CleanLabelResult", "feature_collision",
           "feature_collision_experiment", "gradient_matching", "gradient_matching_experiment", "influence_scores",
           "predicted_loo_change", "most_influential", "lbfgs_fit", "leave_one_out_check", "LooResult",
           "influence_poison", "InfluencePoisonResult"]
