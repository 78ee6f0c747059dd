"""Trustworthy robustness evaluation: robust accuracy under many attacks, per-sample worst case.

``evaluate(model, data, attacks, eps)`` returns a :class:`Report` (clean and robust accuracies
with Wilson intervals, attack cost, sanity warnings, the per-sample robust matrix) that saves to
and loads from JSON and prints as a rich table.
"""

from gibbon.evaluation.counting import CountingModel
from gibbon.evaluation.distributed import LocalExecutor, RayExecutor
from gibbon.evaluation.evaluate import evaluate, evaluate_many
from gibbon.evaluation.report import Report, Result, WorstCase
from gibbon.evaluation.stats import wilson_interval

__all__ = ["evaluate", "evaluate_many", "RayExecutor", "LocalExecutor", "Report", "Result", "WorstCase", "wilson_interval", "CountingModel"]
