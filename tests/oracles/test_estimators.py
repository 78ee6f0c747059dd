"""NES / SPSA gradient estimation: any gradient attack against a score-only black box."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _helpers import fit_full_batch
from gibbon import data
from gibbon.attacks import PGD
from gibbon.core.checks import GibbonInputError
from gibbon.oracles import EstimatedGradient, Oracle, parse_gradient


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train"), data.load("digits", "test", n=120)


@pytest.fixture(scope="module")
def mlp(digits):
    """A 64-32-10 tanh MLP on the 8x8 digits (full-batch Adam, under a second)."""
    train, _ = digits
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
    return fit_full_batch(net, train.x, train.y, lr=0.02)


def _gradients(model, x, y):
    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_var), y, reduction="sum"), x_var)
    return grad.flatten(1)


@pytest.mark.parametrize("method", ["nes", "spsa"])
def test_estimate_aligns_with_the_true_gradient_and_improves_with_samples(mlp, digits, method):
    _, test = digits
    x, y = test.x[:16], test.y[:16]
    true = _gradients(mlp, x, y)
    cos = {}
    for samples in (50, 1000):
        est = _gradients(EstimatedGradient(Oracle(mlp), method=method, samples=samples), x, y)
        cos[samples] = float(F.cosine_similarity(est, true).mean())
    # measured (64 features): ~0.55 with 50 samples, ~0.95 with 1,000; a random direction gives ~0
    assert cos[50] >= 0.35 and cos[1000] >= 0.85 and cos[1000] > cos[50], cos


def test_every_query_is_counted_and_no_gradient_is_asked(mlp, digits):
    _, test = digits
    x, y = test.x[:10], test.y[:10]
    seen = []

    def spy(inp):
        assert not inp.requires_grad  # the Oracle would refuse it; check the estimator never tries
        seen.append(len(inp))
        return mlp(inp)

    oracle = Oracle(spy)
    black_box = EstimatedGradient(oracle, samples=30)
    x_var = x.clone().requires_grad_(True)
    F.cross_entropy(black_box(x_var), y).backward()
    assert sum(seen) == black_box.queries == oracle.total == 10 + 10 * 30
    assert oracle.queries.tolist() == [31] * 10  # each row charged its own forward and 2 * pairs points


@pytest.mark.parametrize("method", ["nes", "spsa"])
def test_pgd_through_an_estimator_nearly_matches_white_box_pgd(mlp, digits, method):
    _, test = digits
    x, y = test.x, test.y
    eps, attack = 0.1, PGD(steps=20, step_size=0.02)

    def accuracy(x_adv):
        with torch.no_grad():
            return float((mlp(x_adv).argmax(1) == y).float().mean())

    white = accuracy(attack(mlp, x, y, eps=eps, generator=torch.Generator().manual_seed(0)))
    black_box = EstimatedGradient(Oracle(mlp), method=method, samples=200)
    black = accuracy(attack(black_box, x, y, eps=eps, generator=torch.Generator().manual_seed(0)))
    clean = accuracy(x)
    # measured (120 test digits, eps 0.1): clean 0.99, white-box PGD-20 0.19, through NES 0.27,
    # SPSA 0.28 (200 samples, ~4k queries per image); with 50 samples 0.43 / 0.38
    assert clean >= 0.9 and black <= white + 0.12 and black <= clean - 0.5, (clean, white, black)
    assert black_box.queries == len(x) * (20 * 201 + 1)  # 20 estimated gradients + 21 scored iterates


def test_reproducible_and_the_global_rng_untouched(mlp, digits):
    _, test = digits
    x, y = test.x[:8], test.y[:8]
    state = torch.get_rng_state()
    a = _gradients(EstimatedGradient(Oracle(mlp), method="spsa", samples=20, seed=3), x, y)
    b = _gradients(EstimatedGradient(Oracle(mlp), method="spsa", samples=20, seed=3), x, y)
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())


def test_query_points_stay_in_the_box(digits):
    _, test = digits
    seen = []

    def spy(inp):
        seen.append(inp.clone())
        return inp.flatten(1)[:, :10]

    x = torch.zeros(3, 1, 8, 8, requires_grad=True)  # every pixel on the lower bound
    EstimatedGradient(Oracle(spy), samples=4, sigma=0.05)(x).sum().backward()
    assert all(float(q.min()) >= 0.0 and float(q.max()) <= 1.0 for q in seen)


def test_bad_options_say_what_to_do(mlp):
    with pytest.raises(GibbonInputError, match="nes, spsa"):
        EstimatedGradient(mlp, method="finite")
    with pytest.raises(GibbonInputError, match="even"):
        EstimatedGradient(mlp, samples=7)
    with pytest.raises(GibbonInputError, match="samples=N"):
        parse_gradient("nes:steps=3", mlp)
    est = parse_gradient("spsa:samples=40,sigma=0.01", mlp)
    assert (est.method, est.pairs, est.sigma) == ("spsa", 20, 0.01)


@pytest.mark.parametrize("attack", [PGD(steps=40, step_size=0.02), "apgd"], ids=["pgd", "apgd"])
def test_a_shared_budget_stops_estimated_attacks_cleanly_with_their_best_iterate(mlp, digits, attack):
    from gibbon.attacks import APGD

    _, test = digits
    x, y = test.x[:40], test.y[:40]
    attack = APGD(steps=40) if attack == "apgd" else attack
    total = 40 * 22 * 10  # about ten estimated steps for every sample (2 + 2 * 10 pairs a row)
    oracle = Oracle(mlp, max_total=total)
    x_adv = attack(EstimatedGradient(oracle, samples=20), x, y, eps=0.1, generator=torch.Generator().manual_seed(0))
    assert oracle.total <= total and oracle.refusals >= 1  # it stopped on the budget, never over it
    assert total - oracle.total < 40 * 22  # and left less than one step of the whole batch unspent
    with torch.no_grad():
        clean, robust = (float((mlp(v).argmax(1) == y).float().mean()) for v in (x, x_adv))
    # measured: 1.0 clean -> 0.775 (PGD) / 0.80 (APGD) after ~10 estimated steps (0.50 / 0.575 with
    # no budget, 40 steps); a no-op keeps 1.0
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and robust <= clean - 0.1, (clean, robust)


def test_an_unaffordable_estimated_step_is_refused_before_any_query(mlp, digits):
    from gibbon.oracles import QueryBudgetExceeded

    _, test = digits
    oracle = Oracle(mlp, max_total=10 * 32 - 1)  # a step for 10 rows costs 10 * (2 + 30)
    black_box = EstimatedGradient(oracle, samples=30)
    with pytest.raises(QueryBudgetExceeded, match="needs 32 queries a row"):
        black_box(test.x[:10].clone().requires_grad_(True))
    assert oracle.total == 0 and oracle.refusals >= 1
    assert black_box(test.x[:10]).shape == (10, 10)  # a plain forward pass still fits
