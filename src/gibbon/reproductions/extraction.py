"""Model extraction through prediction APIs (Tramèr, Zhang, Juels, Reiter & Ristenpart 2016,
"Stealing Machine Learning Models via Prediction APIs", arXiv:1609.02943), target
``tramer2016-equation-solving``: MNIST softmax regression stolen from its probability outputs.
"""

from __future__ import annotations

import copy
import time

import torch


class _Probabilities(torch.nn.Module):
    """The API answers softmax probabilities, as a prediction service does (in ``dtype``)."""

    def __init__(self, model, dtype=torch.float32):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x):
        return self.model(x.to(self.dtype)).softmax(-1)


def tramer2016_equation_solving(seed=0, device="cpu") -> list:
    """Tramèr et al. 2016 (arXiv:1609.02943), section 4.1: a multinomial logistic regression is
    recovered exactly by solving the log-odds equations, d + 1 queries when every class's
    probability is returned; rounded outputs need more queries.

    Setting: the cached MNIST softmax regression (5 epochs of Adam, d = 784, k = 10) behind a
    query-counting oracle that answers probabilities; uniform random queries in [0, 1]^784.
    Measured (seed 0): exactly 785 queries; relative error of the class-difference parameters
    3.1e-8 for a victim computing in float64 (as a JSON API answering doubles would), 1.9e-4
    for the float32 victim (the precision of its own logits); agreement on the 10,000 test
    images 100%. Probabilities rounded to 2 decimals: 20.7% agreement at 785 queries and 20.3%
    at 15,700 -- on random queries this victim's probabilities are near one-hot, most round to 0
    and 7 of the 10 classes stay unidentified (Tramer et al.'s rounding result needs queries
    where the outputs are not saturated). About 25 s.
    """
    from gibbon import data
    from gibbon.extraction.equation_solving import extract_softmax_regression, extraction_error, fidelity
    from gibbon.oracles import Oracle
    from gibbon.reproduce import _linear_model, _row

    started = time.perf_counter()
    victim = _linear_model("softmax-regression", None, seed=seed, device=device).eval()
    test = data.load("mnist", "test")
    linear = [m for m in victim.modules() if isinstance(m, torch.nn.Linear)][-1]
    double = copy.deepcopy(victim).double()
    api = Oracle(_Probabilities(double, torch.float64))
    exact = extract_softmax_regression(api, (1, 28, 28), 10, seed=seed)
    error = extraction_error(exact, linear.weight.detach().double(), linear.bias.detach().double())
    single = extract_softmax_regression(Oracle(_Probabilities(victim)), (1, 28, 28), 10, seed=seed)
    agree = fidelity(exact.model, victim, test.x)
    rows = [_row("queries used (probabilities of all 10 classes per answer), counted by the oracle", "d + 1 = 785",
                 api.total, "= 785", api.total == 785),
            _row("relative error of the recovered class-difference weights (float64 victim)", "exact (~0)", error,
                 "<= 1e-4", error <= 1e-4),
            _row("same, float32 victim (its logits' own precision)", "-",
                 extraction_error(single, linear.weight.detach(), linear.bias.detach()), "report", True),
            _row("agreement with the victim on the 10k test images", "100%", agree, ">= 99.9%", agree >= 0.999)]
    for queries in (785, 20 * 785):
        rounded = extract_softmax_regression(Oracle(_Probabilities(victim), output="rounded", decimals=2),
                                             (1, 28, 28), 10, queries=queries, seed=seed)
        rows.append(_row(f"probabilities rounded to 2 decimals, {queries} queries: agreement", "works with more "
                         "queries", fidelity(rounded.model, victim, test.x), "report", True))
    rows.append(_row("wall time (s)", "-", time.perf_counter() - started, "record", True))
    return rows


def targets() -> list:
    from gibbon.reproduce import Target

    return [Target("tramer2016-equation-solving", "Tramèr et al. 2016", "softmax regression stolen exactly from its "
                   "probabilities with d + 1 queries", tramer2016_equation_solving)]
