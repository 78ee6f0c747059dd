"""Training-data privacy: membership inference (loss threshold, LiRA, shadow models), PATE and,
through :mod:`gibbon.defenses.dp_sgd`, DP-SGD. User guide: ``docs/privacy.md``.

    >>> from gibbon.privacy import loss_threshold_attack
    >>> loss_threshold_attack(model, members=(x_train, y_train), non_members=(x_test, y_test)).auc  # doctest: +SKIP
"""

from gibbon.privacy.lira import LiRA, lira_attack, lira_leave_one_out, lira_scores
from gibbon.privacy.membership import (LOW_FPRS, MembershipResult, advantage, loss_threshold_attack,
                                       membership_scores, roc_summary, save_roc)
from gibbon.privacy.pate import PATEResult, confident_gnmax, gnmax, lnmax, run_pate, train_teachers
from gibbon.privacy.shadow import (ShadowScores, load_shadow_scores, shadow_attack, train_shadows,
                                   zoo_trainer)

__all__ = ["LOW_FPRS", "MembershipResult", "advantage", "loss_threshold_attack", "membership_scores", "roc_summary",
           "save_roc", "LiRA", "lira_attack", "lira_leave_one_out", "lira_scores", "ShadowScores",
           "load_shadow_scores", "shadow_attack", "train_shadows", "zoo_trainer", "PATEResult", "confident_gnmax",
           "gnmax", "lnmax", "run_pate", "train_teachers"]
