"""Named attack suites for ``evaluate(..., suite=NAME)`` (``gibbon evaluate --suite NAME``).

``reliable`` is AutoAttack's standard ensemble with its budgets (Croce & Hein 2020,
arXiv:2003.01690): APGD-CE (100 steps, 1 restart), APGD-T (100 steps, 9 target classes),
FAB-T (100 steps, 9 target classes) and Square (5,000 queries), run as a cascade so each
attack only sees the samples still robust. ``quick`` is APGD-CE plus APGD-T on 3 target
classes: fast feedback, a weaker bound.
"""

from __future__ import annotations

from gibbon.core.checks import GibbonInputError

SUITES: dict[str, tuple[str, ...]] = {
    "reliable": ("apgd-ce:steps=100,restarts=1", "apgd-t:steps=100,n_target_classes=9",
                 "fab:steps=100,n_target_classes=9", "square:max_queries=5000"),
    "quick": ("apgd-ce:steps=100,restarts=1", "apgd-t:steps=100,n_target_classes=3"),
}


def suite_attacks(name: str) -> list[str]:
    """The attack specs of suite ``name``."""
    if name not in SUITES:
        raise GibbonInputError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)}")
    return list(SUITES[name])
