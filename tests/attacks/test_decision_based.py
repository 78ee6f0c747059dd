"""What HopSkipJump and Boundary share as decision-based attacks: exact query budgets, labels
only, no gradients, determinism, given starting points."""

from __future__ import annotations

import pytest
import torch

from gibbon.attacks import boundary, hopskipjump
from gibbon.core.checks import GibbonInputError
from gibbon.oracles import Oracle
from _blackbox import BlackBox, one_thread  # noqa: F401 (autouse fixture)

ATTACKS = [pytest.param(hopskipjump, id="hopskipjump"), pytest.param(boundary, id="boundary")]


@pytest.fixture(scope="module")
def hundred(digits):
    _, _, x, y = digits
    return x[:100], y[:100]


def _run(attack, model, x, y, seed=0, **kw):
    oracle = Oracle(BlackBox(model), n=len(x))  # no budget of its own: counts per sample
    return attack(oracle, x, y, generator=torch.Generator().manual_seed(seed), **kw), oracle


@pytest.mark.parametrize("attack", ATTACKS)
def test_query_budget_is_exact_and_an_outer_budget_stops_cleanly(attack, digits_mlp, hundred):
    x, y = hundred
    for budget in (1, 2, 31, 250):
        _, oracle = _run(attack, digits_mlp, x, y, max_queries=budget)
        assert int(oracle.queries.max()) <= budget
    outer = Oracle(digits_mlp, max_queries=7, n=len(x))
    x_adv = attack(outer, x, y, max_queries=1000)
    assert int(outer.queries.max()) <= 7 and x_adv.shape == x.shape


@pytest.mark.parametrize("attack", ATTACKS)
def test_label_only_oracle_and_gradient_refusing_model(attack, digits_mlp, hundred):
    x, y = hundred[0][:20], hundred[1][:20]
    labels_only = Oracle(BlackBox(digits_mlp), output="label")
    x_adv = attack(labels_only, x, y, max_queries=300)
    assert float((digits_mlp(x_adv).argmax(1) != y).float().mean()) >= 0.9
    assert int(labels_only.queries.max()) <= 300


@pytest.mark.parametrize("attack", ATTACKS)
def test_same_seed_same_output(attack, digits_mlp, hundred):
    x, y = hundred[0][:20], hundred[1][:20]
    a, b, c = (_run(attack, digits_mlp, x, y, seed=s, max_queries=300)[0] for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("attack", ATTACKS)
def test_starting_points(attack, digits_mlp, hundred):
    x, y = hundred[0][:20], hundred[1][:20]
    others = x.roll(1, 0)  # the previous image, of another class for most samples
    use = digits_mlp(others).argmax(1) != y
    x_adv, _ = _run(attack, digits_mlp, x[use], y[use], starting_points=others[use], max_queries=300)
    assert bool((digits_mlp(x_adv).argmax(1) != y[use]).all())
    with pytest.raises(GibbonInputError, match="not adversarial"):
        attack(digits_mlp, x, y, starting_points=x, max_queries=300)
