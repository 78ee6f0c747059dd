"""Black-box views of models: an :class:`Oracle` answers queries with scores or labels, never a gradient,
and counts every query against optional budgets: per sample (``max_queries``) and shared by all
samples (``max_total``, or a remote API's own budget).

Score-based and decision-based attacks (Square, one-pixel, ...) talk to a model only through an
Oracle (``as_oracle(model)``), so they cannot ask for a gradient or overspend their budget.

Models that are not torch modules enter as callables ``x -> scores`` to wrap in an Oracle:
scikit-learn estimators (:mod:`gibbon.oracles.sklearn`: :func:`train_technique`,
:class:`SklearnModel`, :func:`save_sklearn` / :func:`load_sklearn` with skops) and ONNX graphs
run by onnxruntime (:mod:`gibbon.oracles.onnx`: :class:`OnnxModel`, :func:`export_onnx`). Those
names are imported on first use, so ``import gibbon`` needs neither skops nor onnxruntime.

:class:`EstimatedGradient` (:mod:`gibbon.oracles.estimators`) turns a score-based black box into a
differentiable model by NES or SPSA estimates, so any gradient attack runs against it.
"""

import importlib

from gibbon.oracles.base import (
    OUTPUTS,
    UNLIMITED,
    GradientRefusedError,
    Oracle,
    QueryBudgetExceeded,
    as_oracle,
    requires_scores,
    share_total,
    to_probabilities,
)
from gibbon.oracles.estimators import EstimatedGradient, estimate_gradient, parse_gradient

_LAZY = {
    "SklearnModel": "sklearn", "train_technique": "sklearn", "save_sklearn": "sklearn", "load_sklearn": "sklearn",
    "TECHNIQUES": "sklearn", "TRUSTED_TYPES": "sklearn", "UntrustedFileError": "sklearn",
    "OnnxModel": "onnx", "export_onnx": "onnx",
    "HttpOracle": "http", "ServerBudgetExhausted": "http",
}

__all__ = ["Oracle", "as_oracle", "GradientRefusedError", "QueryBudgetExceeded", "UNLIMITED", "OUTPUTS",
           "requires_scores", "share_total", "to_probabilities", "EstimatedGradient", "estimate_gradient", "parse_gradient", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"gibbon.oracles.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gibbon.oracles' has no attribute {name!r}")
