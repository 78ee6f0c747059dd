"""Black-box views of models: an :class:`Oracle` answers queries with scores or labels, never a gradient,
and counts every query against an optional per-sample budget.

Score-based and decision-based attacks (Square, one-pixel, ...) talk to a model only through an
Oracle (``as_oracle(model)``), so they cannot ask for a gradient or overspend their budget.
"""

from gibbon.oracles.base import (
    OUTPUTS,
    UNLIMITED,
    GradientRefusedError,
    Oracle,
    QueryBudgetExceeded,
    as_oracle,
    requires_scores,
    to_probabilities,
)

__all__ = ["Oracle", "as_oracle", "GradientRefusedError", "QueryBudgetExceeded", "UNLIMITED", "OUTPUTS",
           "requires_scores", "to_probabilities"]
