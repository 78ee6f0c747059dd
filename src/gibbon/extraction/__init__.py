"""Model extraction: recover a black-box model's parameters from what its prediction API answers.

:func:`extract_softmax_regression` is the equation-solving attack of Tramèr, Zhang, Juels, Reiter &
Ristenpart 2016, "Stealing Machine Learning Models via Prediction APIs" (arXiv:1609.02943) on
(multinomial) logistic regression: ``d + 1`` queries with the scores of all classes.
"""

from gibbon.extraction.equation_solving import (
    ExtractionResult,
    extract_softmax_regression,
    extraction_error,
    fidelity,
    log_probabilities,
)

__all__ = ["ExtractionResult", "extract_softmax_regression", "extraction_error", "fidelity", "log_probabilities"]
