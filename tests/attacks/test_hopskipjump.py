"""HopSkipJumpAttack (arXiv:1904.02144): known answers, effectiveness, query budget, label-only access.

Measured (seed 0, 1 thread). Binary linear model (32 points, closed-form minimal distance
|f| / ||w||_dual), 1,000 queries: L2 distance / exact median 1.046, max 1.102; L-infinity median
1.050, max 1.136 (2,000 queries: 1.016 / 1.031 and 1.020 / 1.067). Digits MLP, 100 test digits
(97 correct), 1,000 queries: 100% success, median L2 0.476 (C&W-L2 with 9 x 1,000 steps: 0.373;
HSJ at 10,000 queries: 0.446, it stays in the basin of its noise start), median L-infinity 0.096;
targeted (y + 1) % 10: 100%, median L2 0.696. Thresholds leave room for seeds.
"""

from __future__ import annotations

import pytest
import torch

from gibbon.attacks import ATTACKS, HopSkipJump, hopskipjump
from gibbon.core.norms import get_norm
from gibbon.oracles import Oracle
from _blackbox import hundred, one_thread, run_counted  # noqa: F401 (fixtures)
from _linear import exact_margin, linear_case

BOUNDS = (-100.0, 100.0)  # far away: the box never limits the linear case


def _run(model, x, y, seed=0, **kw):
    kw.setdefault("max_queries", 1000)
    return run_counted(hopskipjump, model, x, y, seed=seed, **kw)


@pytest.mark.parametrize("norm,median_ceiling,max_ceiling", [("l2", 1.10, 1.3), ("linf", 1.12, 1.4)])
def test_linear_model_close_to_the_closed_form(norm, median_ceiling, max_ceiling):
    model, x, y, f = linear_case(0)
    x_adv, oracle = _run(model, x, y, norm=norm, bounds=BOUNDS)
    ratio = get_norm(norm).distance(x_adv - x) / exact_margin(model, f, norm)
    fooled = model(x_adv).argmax(1) != y
    print(f"hopskipjump {norm}, 1000 queries: distance / exact median {ratio.median():.4f} max {ratio.max():.4f}")
    assert bool(fooled.all()), f"{int((~fooled).sum())} of {len(x)} not adversarial (a no-op attack fails here)"
    assert float(ratio.min()) >= 1 - 1e-6, "an adversarial point below the exact margin: the distance is wrong"
    assert float(ratio.median()) <= median_ceiling and float(ratio.max()) <= max_ceiling, ratio
    assert int(oracle.queries.max()) <= 1000


@pytest.mark.parametrize("norm,median_ceiling", [("l2", 0.6), ("linf", 0.13)])
def test_effective_on_digits(norm, median_ceiling, digits_mlp, hundred):
    x, y = hundred
    x_adv, oracle = _run(digits_mlp, x, y, norm=norm)
    correct = digits_mlp(x).argmax(1) == y
    fooled = (digits_mlp(x_adv).argmax(1) != y) & correct
    rate = float(fooled.sum() / correct.sum())
    dist = get_norm(norm).distance(x_adv - x)
    median = float(dist[fooled].median())
    print(f"hopskipjump {norm} digits: success {rate:.3f}, median distance {median:.4f}, "
          f"queries max {int(oracle.queries.max())}")
    assert rate >= 0.95, f"success {rate:.3f} < 0.95"
    assert median <= median_ceiling, f"median {norm} distance {median:.4f} > {median_ceiling}"
    assert int(oracle.queries.max()) <= 1000 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert bool(torch.equal(x_adv[~correct], x[~correct])), "misclassified inputs are their own minimal adversarial"


def test_targeted_on_digits(digits_mlp, hundred):
    x, y = hundred
    target = (y + 1) % 10
    x_adv, oracle = _run(digits_mlp, x, y, target=target)
    hit = digits_mlp(x_adv).argmax(1) == target
    median = float(get_norm("l2").distance(x_adv - x)[hit].median())
    print(f"hopskipjump targeted digits: {hit.float().mean():.3f} reach the target, median L2 {median:.4f}")
    assert float(hit.float().mean()) >= 0.95 and median <= 0.85
    assert int(oracle.queries.max()) <= 1000


def test_more_queries_get_closer(digits_mlp, hundred):
    x, y = hundred
    d = [float(get_norm("l2").distance(_run(digits_mlp, x, y, max_queries=q)[0] - x).median()) for q in (200, 1000)]
    assert d[1] < 0.9 * d[0], f"median L2 at 200 / 1000 queries: {d}"


def test_no_start_found_returns_the_clean_input():
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    torch.nn.init.zeros_(constant[1].weight)
    constant[1].bias.data = torch.tensor([1.0, 0.0, 0.0])  # always class 0
    x, y = torch.rand(5, 1, 4, 4), torch.zeros(5, dtype=torch.long)
    oracle = Oracle(constant, n=5)
    x_adv = hopskipjump(oracle, x, y, max_queries=50, init_queries=20)
    assert torch.equal(x_adv, x) and oracle.queries.tolist() == [21] * 5  # the clean query + 20 noise draws
    target = torch.ones(5, dtype=torch.long)  # no image of the batch is labelled 1: fails cleanly too
    assert torch.equal(hopskipjump(constant, x, y, target=target, max_queries=50), x)


def test_registered_as_decision_based():
    cls = ATTACKS["hopskipjump"]
    assert cls is HopSkipJump and cls.black_box and cls.minimal and cls.randomized and not cls.targeted_only
    assert cls.norms == ("l2", "linf") and cls().max_queries == 10_000
