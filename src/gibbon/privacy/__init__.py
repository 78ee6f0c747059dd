"""Training-data privacy: membership inference (and, through :mod:`gibbon.defenses.dp_sgd`, DP-SGD).

    >>> from gibbon.privacy import loss_threshold_attack
    >>> loss_threshold_attack(model, members=(x_train, y_train), non_members=(x_test, y_test)).auc  # doctest: +SKIP
"""

from gibbon.privacy.membership import (LOW_FPRS, MembershipResult, advantage, loss_threshold_attack,
                                       membership_scores, roc_summary, save_roc)

__all__ = ["LOW_FPRS", "MembershipResult", "advantage", "loss_threshold_attack", "membership_scores", "roc_summary",
           "save_roc"]
