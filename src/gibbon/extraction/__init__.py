"""Model extraction: recover a black-box model from what its prediction API answers.

* :func:`extract_softmax_regression`: the equation-solving attack of Tramèr, Zhang, Juels, Reiter &
  Ristenpart 2016, "Stealing Machine Learning Models via Prediction APIs" (arXiv:1609.02943) on
  (multinomial) logistic regression: ``d + 1`` queries with the scores of all classes;
  ``placement="boundary"`` for rounded answers.
* :func:`extract_tree`: the same paper's path-finding attack on decision trees (section 4.2): a
  leaf-identity API gives up the whole tree.
* :func:`knockoff_nets`: learning-based extraction (Orekondy, Schiele & Fritz 2019, "Knockoff Nets",
  arXiv:1812.02766): a copy trained on the answers to the thief's own images; answers stored and
  resumable (:func:`collect_answers`).
* :class:`PredictionPoisoning`: the MAD defense (Orekondy et al. 2020, arXiv:1906.10908).
"""

from gibbon.extraction.equation_solving import (
    ExtractionResult,
    extract_softmax_regression,
    extraction_error,
    fidelity,
    log_probabilities,
)
from gibbon.extraction.knockoff import Answers, KnockoffResult, collect_answers, knockoff_nets, train_student
from gibbon.extraction.path_finding import ExtractedTree, TreeExtractionResult, extract_tree, leaf_identity_oracle
from gibbon.extraction.prediction_poisoning import PredictionPoisoning, mad_perturb

__all__ = ["Answers", "ExtractedTree", "ExtractionResult", "KnockoffResult", "PredictionPoisoning",
           "TreeExtractionResult", "collect_answers", "extract_softmax_regression", "extract_tree", "extraction_error",
           "fidelity", "knockoff_nets", "leaf_identity_oracle", "log_probabilities", "mad_perturb", "train_student"]
