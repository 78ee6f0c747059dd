"""The Scores adapter and the remedies' small functions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.evaluation.adapters import Scores, correct, looks_like_probabilities, scores_of
from gibbon.evaluation.findings import single_step_far_weaker_finding
from gibbon.evaluation.remedies import eot_samples, gradient_variance, parse_remedies


class Lin(nn.Module):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.net(x)


class RaisesOnLarge(Lin):
    def forward(self, x):
        if bool((x.flatten(1).sum(dim=1) > 3).any()):
            raise ValueError("too large")
        return super().forward(x)


def test_scores_of_finds_the_logits():
    t = torch.zeros(2, 3)
    assert scores_of(t) is t and scores_of((t, "aux")) is t and scores_of([None, t]) is t
    assert scores_of({"logits": t, "x": torch.ones(2, 9)}) is t and scores_of({"only": t}) is t

    class Out:
        logits = t
    assert scores_of(Out()) is t
    with pytest.raises(GibbonInputError, match="logits"):
        scores_of({"a": t, "b": t})
    with pytest.raises(GibbonInputError):
        scores_of("nope")


def test_a_model_raising_on_some_samples_gets_nan_rows_there_only():
    model = Scores(RaisesOnLarge())
    x = torch.stack([torch.full((1, 2, 2), v) for v in (0.1, 0.9, 0.2)])  # the middle one sums to 3.6
    out = model(x)
    assert torch.isfinite(out[[0, 2]]).all() and torch.isnan(out[1]).all()
    assert model.failed_samples == 1 and "too large" in model.errors[0]
    assert correct(out, torch.tensor([0, 0, 0])).tolist()[1] is False
    xg = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(xg), torch.tensor([0, 1, 2]), reduction="sum")
    (g,) = torch.autograd.grad(loss, xg)
    assert torch.isfinite(g).all() and float(g[1].abs().sum()) == 0.0 and float(g[0].abs().sum()) > 0


def test_probabilities_are_detected_and_logged_on_request():
    probs = torch.softmax(torch.randn(4, 3), dim=1)
    assert looks_like_probabilities(probs) and not looks_like_probabilities(torch.randn(4, 3))
    model = Scores(lambda x: probs).use_log()
    assert torch.allclose(model(torch.zeros(4, 2)), probs.log())


def test_wrong_shapes_are_input_errors():
    with pytest.raises(GibbonInputError, match="one row of class scores"):
        Scores(lambda x: torch.zeros(7))(torch.zeros(2, 3))


def test_parse_remedies():
    assert parse_remedies("auto") == parse_remedies(None) and len(parse_remedies("auto")) == 6
    assert parse_remedies(["eot", "eot", "bpda"]) == ("eot", "bpda")
    with pytest.raises(GibbonInputError, match="did you mean 'surrogate'"):
        parse_remedies("surogate")


def test_gradient_variance_is_zero_for_a_deterministic_model_and_not_for_a_noisy_one():
    x, y = torch.rand(8, 1, 2, 2), torch.zeros(8, dtype=torch.long)
    still = gradient_variance(Lin(), x, y)
    assert still["relative_variance"] < 1e-10 and eot_samples(still["relative_variance"]) == 2

    class Noisy(Lin):
        def forward(self, x):
            return super().forward(x + torch.randn_like(x))

    class Relu(Noisy):  # a non-linear model, so the input noise moves the gradient
        def forward(self, x):
            return torch.relu(super().forward(x)) ** 2
    noisy = gradient_variance(Relu(), x, y)
    assert noisy["relative_variance"] > 0.1 and eot_samples(noisy["relative_variance"]) > 2
    assert eot_samples(None) == 32 and eot_samples(math.inf) == 32


def test_single_step_far_weaker_fires_on_catastrophic_overfitting_only():
    def acc(clean, fgsm, pgd):
        return {"clean": {"accuracy": clean}, "FGSM": {"accuracy": fgsm}, "PGD-10": {"accuracy": pgd},
                "PGD-100": {"accuracy": pgd}}
    assert single_step_far_weaker_finding(acc(0.99, 0.925, 0.005)).flagged  # measured on FGSM-trained wong-net
    assert not single_step_far_weaker_finding(acc(0.99, 0.96, 0.90)).flagged  # honest robust model
    assert not single_step_far_weaker_finding(acc(0.99, 0.40, 0.0)).flagged  # undefended
