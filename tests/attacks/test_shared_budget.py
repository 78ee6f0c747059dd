"""Black-box attacks under a budget shared by all samples (``Oracle(max_total=...)``, or a remote
API's per-token budget): they stop cleanly before it, having spent nearly all of it.

A no-op attack fails the spending checks (it spends nothing); an attack that ignored the shared
budget would raise :class:`~gibbon.oracles.QueryBudgetExceeded` from the oracle.
"""

from __future__ import annotations

import pytest
import torch
from _blackbox import BlackBox, one_thread  # noqa: F401 (autouse fixture)

from gibbon.attacks import boundary, hopskipjump, one_pixel, square
from gibbon.oracles import Oracle


@pytest.fixture(scope="module")
def hundred(digits):
    _, _, x, y = digits
    return x[:100], y[:100]


def _shared(model, total):
    return Oracle(BlackBox(model), max_total=total)


# attack, its arguments, the most queries one step may leave unspent (its granularity)
CASES = [
    pytest.param(lambda o, x, y, g: square(o, x, y, eps=0.02, max_queries=1000, generator=g), 100, id="square"),
    pytest.param(lambda o, x, y, g: one_pixel(o, x, y, pixels=1, population=20, iterations=20, generator=g), 20,
                 id="one-pixel"),
    pytest.param(lambda o, x, y, g: boundary(o, x, y, max_queries=1000, generator=g), 200, id="boundary"),
    pytest.param(lambda o, x, y, g: hopskipjump(o, x, y, max_queries=1000, generator=g), 200, id="hopskipjump"),
]


@pytest.mark.parametrize("run, slack", CASES)
@pytest.mark.parametrize("total", [0, 37, 1500])
def test_a_shared_budget_stops_the_attack_cleanly_after_spending_it(run, slack, total, digits_mlp, hundred):
    x, y = hundred
    oracle = _shared(digits_mlp, total)
    x_adv = run(oracle, x, y, torch.Generator().manual_seed(0))  # must not raise QueryBudgetExceeded
    assert x_adv.shape == x.shape and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert oracle.total <= total, f"spent {oracle.total} of a shared budget of {total}"
    assert oracle.total >= total - slack, f"stopped after {oracle.total} of {total} queries: budget left unspent"
    untouched = (x_adv == x).flatten(1).all(1)
    if total == 0:
        assert bool(untouched.all()), "with no budget the images come back unchanged"


def test_square_under_a_shared_budget_is_as_strong_as_with_the_same_budget_per_sample(digits_mlp, hundred):
    """1,500 queries shared by 100 images: every unsolved image gets one query per iteration, so
    the shared budget goes where it is needed (solved images stop) and beats 15 per image."""
    x, y = hundred
    g = torch.Generator().manual_seed(0)
    shared = _shared(digits_mlp, 1500)
    adv_shared = square(shared, x, y, eps=0.2, max_queries=1000, generator=g)
    per_sample = Oracle(BlackBox(digits_mlp), max_queries=15, n=len(x))
    adv_each = square(per_sample, x, y, eps=0.2, max_queries=1000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = float((digits_mlp(x).argmax(1) == y).float().mean())
        acc_shared = float((digits_mlp(adv_shared).argmax(1) == y).float().mean())
        acc_each = float((digits_mlp(adv_each).argmax(1) == y).float().mean())
    print(f"square eps 0.2: clean {clean:.2f}, 1,500 shared {acc_shared:.2f} ({shared.total} queries), "
          f"15 per image {acc_each:.2f} ({per_sample.total})")
    assert acc_shared <= clean - 0.5, f"robust accuracy {acc_shared:.2f} from clean {clean:.2f}"
    assert acc_shared <= acc_each + 0.02


@pytest.mark.parametrize("total, cut", [(10**6, False), (400, True), (200, True)])
def test_hopskipjump_counts_a_step_the_shared_total_cut_short(total, cut):
    """HopSkipJump spends fewer probes on a step when the total cannot pay for all of them; that
    is a cut (``evaluate`` reports it) even when no call was refused. One step of 100 probes on 4
    samples costs about 510 queries with no budget; 400 and 200 shrink the probe counts instead."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.rand(4, 1, 4, 4)
    y = model(x).argmax(1)
    oracle = Oracle(model, max_total=total)
    hopskipjump(oracle, x, y, max_queries=10_000, steps=1, init_evals=100, generator=torch.Generator().manual_seed(0))
    assert oracle.total <= total
    assert (oracle.refusals > 0) == cut, (oracle.total, oracle.refusals)
