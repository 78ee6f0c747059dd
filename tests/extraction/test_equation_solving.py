"""Equation-solving extraction (Tramèr et al. 2016, arXiv:1609.02943) of softmax / logistic regression."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from gibbon import data, zoo
from gibbon.core.checks import GibbonInputError
from gibbon.extraction import ExtractionResult, extract_softmax_regression, extraction_error, fidelity
from gibbon.oracles import Oracle

D = 64  # digits 8x8


def _fit(arch, train):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = zoo.build(arch, train)
        zoo.fit(model, train, epochs=10, batch_size=64, lr=1e-2, progress=False, seed=0)
    torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train"), data.load("digits", "test")


@pytest.fixture(scope="module")
def softmax_victim(digits):
    return _fit("softmax-regression", digits[0])  # measured 94.7% test accuracy


@pytest.fixture(scope="module")
def binary(digits):
    train, test = (data.load("digits", split, classes=[3, 8]) for split in ("train", "test"))
    return _fit("logistic-regression", train), test


def _probabilities(model):
    return torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()


@pytest.mark.parametrize("answers", ["logits", "probabilities"])
def test_softmax_regression_is_recovered_exactly_in_d_plus_1_queries(softmax_victim, digits, answers):
    victim = softmax_victim if answers == "logits" else _probabilities(softmax_victim)
    oracle = Oracle(victim)
    result = extract_softmax_regression(oracle, (1, 8, 8), 10)
    assert oracle.total == D + 1 == result.queries
    assert extraction_error(result, softmax_victim[1].weight, softmax_victim[1].bias) < 3e-4  # float32 rounding: 3e-5 / 5e-5 on AMD EPYC, 1.3e-4 / 1.2e-4 on Intel Xeon
    assert result.residual < 1e-6 and result.saturated == 0 and result.underdetermined == ()
    assert result.weight.shape == (10, D) and bool((result.weight[-1] == 0).all()) and float(result.bias[-1]) == 0
    assert fidelity(result.model, softmax_victim, digits[1].x) == 1.0
    x = digits[1].x[:50]  # an equivalent model: the same probabilities, not only the same labels
    with torch.no_grad():
        assert torch.allclose(result.model(x).softmax(1), softmax_victim(x).softmax(1), atol=1e-4)
    assert isinstance(result, ExtractionResult) and json.dumps(result.to_dict())


def test_binary_logistic_regression_is_recovered_exactly(binary):
    model, test = binary
    oracle = Oracle(_probabilities(model))
    result = extract_softmax_regression(oracle, (1, 8, 8), 2)
    assert oracle.total == D + 1
    linear = model[1].linear  # logits [0, w.x + b]: class 0's row is zero, class 1's is (w, b)
    true_w = torch.cat([torch.zeros_like(linear.weight), linear.weight])
    true_b = torch.cat([torch.zeros(1), linear.bias])
    assert extraction_error(result, true_w, true_b) < 1e-4  # measured 1.5e-6
    assert fidelity(result.model, model, test.x) == 1.0


def test_a_wrong_extraction_is_caught_by_the_error_measure(softmax_victim):
    result = extract_softmax_regression(Oracle(softmax_victim), (1, 8, 8), 10)
    noisy = torch.nn.Linear(D, 10)
    assert extraction_error(result, noisy.weight, noisy.bias) > 0.5


def test_rounded_outputs_need_more_queries(softmax_victim, digits):
    """Probabilities rounded to 2 decimals: d + 1 queries are inexact, 20 (d + 1) bring fidelity back."""
    victim = _probabilities(softmax_victim)
    true = (softmax_victim[1].weight, softmax_victim[1].bias)
    with pytest.warns(UserWarning, match="not identified"):
        few = extract_softmax_regression(Oracle(victim, output="rounded", decimals=2), (1, 8, 8), 10)
    assert few.underdetermined and few.saturated > 0 and extraction_error(few, *true) > 0.5
    assert fidelity(few.model, softmax_victim, digits[1].x) < 0.8  # measured 66%
    oracle = Oracle(victim, output="rounded", decimals=2)
    many = extract_softmax_regression(oracle, (1, 8, 8), 10, queries=20 * (D + 1))
    assert oracle.total == 1300 and many.underdetermined == ()
    assert fidelity(many.model, softmax_victim, digits[1].x) >= 0.95  # measured 97.3%
    assert extraction_error(many, *true) < 0.2 and many.residual > 1e-3  # measured 0.11; the fit is inexact


def test_bad_inputs(softmax_victim):
    with pytest.raises(GibbonInputError, match="at least d \\+ 1 = 65 queries"):
        extract_softmax_regression(Oracle(softmax_victim), (1, 8, 8), 10, queries=64)
    with pytest.raises(GibbonInputError, match="num_classes must be >= 2"):
        extract_softmax_regression(Oracle(softmax_victim), (1, 8, 8), 1)
    with pytest.raises(GibbonInputError, match="labels only.*learning-based"):
        extract_softmax_regression(Oracle(softmax_victim, output="label"), (1, 8, 8), 10)
    with pytest.raises(GibbonInputError, match="needs 65 queries"):
        extract_softmax_regression(Oracle(softmax_victim, max_total=64), (1, 8, 8), 10)
    with pytest.raises(GibbonInputError, match="answers 10 scores"):
        extract_softmax_regression(Oracle(softmax_victim), (1, 8, 8), 3)
    with pytest.raises(GibbonInputError, match="bounds"):
        extract_softmax_regression(Oracle(softmax_victim), (1, 8, 8), 10, bounds=(1, 0))
    with pytest.raises(GibbonInputError, match="ridge must be >= 0"):
        extract_softmax_regression(Oracle(softmax_victim), (1, 8, 8), 10, ridge=-1.0)


def test_extraction_over_http_from_gibbon_serve(softmax_victim, digits, tmp_path):
    """The attack against the real server: only its probabilities, its budget counts d + 1 queries."""
    pytest.importorskip("httpx")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
    from _serve import TOKENS, ServerProcess

    from gibbon.oracles import HttpOracle

    model_path = zoo.save(softmax_victim, tmp_path / "softmax.safetensors", dataset=digits[0])
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"token": TOKENS[name][0], "name": name, **TOKENS[name][1]}
                                             for name in ("user", "small")]}))
    server = ServerProcess(model_path, tokens, tmp_path / "logs").start()
    try:
        with HttpOracle(server.url, TOKENS["user"][0]) as remote:
            result = extract_softmax_regression(Oracle(remote), (1, 8, 8), 10)
            assert remote.total == D + 1
        assert extraction_error(result, softmax_victim[1].weight, softmax_victim[1].bias) < 1e-3
        assert fidelity(result.model, softmax_victim, digits[1].x) == 1.0
        with HttpOracle(server.url, TOKENS["small"][0]) as remote:  # a budget of 10 queries
            with pytest.raises(GibbonInputError, match="needs 65 queries"):
                extract_softmax_regression(Oracle(remote), (1, 8, 8), 10)
    finally:
        server.stop()
        server.kill()


def test_boundary_placement_beats_uniform_on_rounded_outputs(softmax_victim, digits):
    """Rounded to 2 decimals, 5 (d + 1) queries: placed where no class is saturated they recover
    the model; uniform ones (most probabilities rounded to 0) do clearly worse at the same budget."""
    victim = _probabilities(softmax_victim)
    true = (softmax_victim[1].weight, softmax_victim[1].bias)
    found = {}
    for placement in ("uniform", "boundary"):
        oracle = Oracle(victim, output="rounded", decimals=2)
        found[placement] = extract_softmax_regression(oracle, (1, 8, 8), 10, queries=5 * (D + 1), placement=placement)
        assert oracle.total == 325 == found[placement].queries
    uniform, boundary = found["uniform"], found["boundary"]
    assert boundary.underdetermined == () and boundary.saturated < uniform.saturated
    assert fidelity(boundary.model, softmax_victim, digits[1].x) >= 0.98  # measured 99.3%
    assert fidelity(uniform.model, softmax_victim, digits[1].x) < 0.96  # measured 93.0%
    assert extraction_error(boundary, *true) < 0.1  # measured 0.042
    assert extraction_error(uniform, *true) > 3 * extraction_error(boundary, *true)  # measured 0.27


def test_boundary_placement_is_still_exact_on_exact_outputs(softmax_victim):
    oracle = Oracle(softmax_victim)
    result = extract_softmax_regression(oracle, (1, 8, 8), 10, queries=2 * (D + 1), placement="boundary")
    assert oracle.total == 130 == result.queries
    assert extraction_error(result, softmax_victim[1].weight, softmax_victim[1].bias) < 1e-3


def test_boundary_queries_spend_exactly_the_budget_over_uneven_rounds(softmax_victim):
    oracle = Oracle(_probabilities(softmax_victim), output="rounded", decimals=2)
    result = extract_softmax_regression(oracle, (1, 8, 8), 10, queries=327, placement="boundary", rounds=4)
    assert oracle.total == 327 == result.queries
    short = Oracle(softmax_victim, max_total=300)  # refused before any query is spent
    with pytest.raises(GibbonInputError, match="needs 325 queries"):
        extract_softmax_regression(short, (1, 8, 8), 10, queries=325, placement="boundary")
    assert short.total == 0


def test_placed_queries_are_in_the_box_and_not_saturated(softmax_victim):
    """With the true model as the estimate, placed points give every class a real probability;
    uniform points of the same box are near one-hot."""
    from gibbon.extraction.equation_solving import box_scales, place_near_boundaries

    linear = softmax_victim[1]
    theta = torch.cat([linear.weight, linear.bias[:, None]], 1).detach().double()
    theta = theta - theta[-1]
    gen = torch.Generator().manual_seed(0)
    x = place_near_boundaries(theta, 200, (0.0, 1.0), gen)
    assert x.shape == (200, D) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert float(x.std()) > 0.2  # spread over the box, not collapsed to one point (measured 0.29)
    with torch.no_grad():
        placed = softmax_victim(x.float().reshape(-1, 1, 8, 8)).softmax(1).min(1).values
        uniform = softmax_victim(torch.rand(200, 1, 8, 8, generator=gen)).softmax(1).min(1).values
    assert float(placed.median()) > 0.02 > float(uniform.median())  # measured 0.045 vs 0.0014
    scales = box_scales(5)
    assert scales[0] == pytest.approx(0.05) and scales[-1] == 1.0 and scales == sorted(scales)


@pytest.mark.parametrize("options, message", [
    ({"placement": "edge"}, "placement must be one of"),
    ({"placement": "boundary", "rounds": 1}, "rounds >= 2"),
    ({"placement": "boundary", "rounds": 2.5}, "rounds >= 2"),
    ({"placement": "boundary", "rounds": 100}, "more than queries"),
    ({"rounds": 3}, "uniform placement asks in one round"),
])
def test_bad_placement_options(softmax_victim, options, message):
    oracle = Oracle(softmax_victim)
    with pytest.raises(GibbonInputError, match=message):
        extract_softmax_regression(oracle, (1, 8, 8), 10, **options)
    assert oracle.total == 0
