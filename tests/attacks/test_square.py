"""Square Attack (arXiv:1912.00986) on the digits MLP: effective, query-bounded, gradient-free.

Measured on 100 test digits (clean accuracy 97%), seed 0, max_queries 1000: robust accuracy 0%
at L-infinity eps 0.2 (mean 11 queries per sample) and 20% at eps 0.1; 0% at L2 eps 1.0;
targeted (y + 1) % 10 at L-infinity eps 0.2: 88% reach the target (white-box PGD with 100 steps:
91%; both 100% at eps 0.3). Thresholds leave room.
"""

from __future__ import annotations

import pytest
import torch

from gibbon.attacks import ATTACKS, square
from gibbon.attacks.square import _extract, _place, _windows, p_schedule
from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import get_norm
from gibbon.oracles import Oracle

ULPS = 8 * torch.finfo(torch.float32).eps


class BlackBox(torch.nn.Module):
    """Fails the test if it is ever asked for a gradient (or even run with autograd on)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        assert not x.requires_grad and not torch.is_grad_enabled(), "square asked for a gradient"
        return self.model(x)


@pytest.fixture(scope="module")
def hundred(digits):
    _, _, x, y = digits
    return x[:100], y[:100]


def _run(model, x, y, **kw):
    oracle = Oracle(BlackBox(model), n=len(x))  # no budget of its own: counts per sample
    kw.setdefault("max_queries", 1000)
    x_adv = square(oracle, x, y, generator=torch.Generator().manual_seed(0), **kw)
    return x_adv, oracle


@pytest.mark.parametrize("norm,eps,ceiling", [("linf", 0.2, 0.05), ("linf", 0.1, 0.35), ("l2", 1.0, 0.10)])
def test_effective_within_budget_and_ball(norm, eps, ceiling, digits_mlp, hundred):
    x, y = hundred
    x_adv, oracle = _run(digits_mlp, x, y, eps=eps, norm=norm)
    acc = float((digits_mlp(x_adv).argmax(1) == y).float().mean())
    clean = float((digits_mlp(x).argmax(1) == y).float().mean())
    print(f"square {norm} eps={eps}: robust accuracy {acc:.3f} (clean {clean:.3f}), "
          f"queries mean {oracle.queries.float().mean():.1f} max {int(oracle.queries.max())}")
    assert clean > ceiling + 0.5, "a no-op attack must fail this threshold"
    assert acc <= ceiling, f"square {norm} eps={eps}: robust accuracy {acc:.3f} > {ceiling}"
    assert int(oracle.queries.max()) <= 1000
    dist = get_norm(norm).distance(x_adv - x)
    assert float(dist.max()) <= eps * (1 + ULPS) + ULPS and 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0


def test_targeted(digits_mlp, hundred):
    x, y = hundred
    target = (y + 1) % 10
    x_adv, oracle = _run(digits_mlp, x, y, eps=0.2, target=target)
    hit = float((digits_mlp(x_adv).argmax(1) == target).float().mean())
    print(f"square targeted linf eps=0.2: {hit:.3f} reach the target, mean queries {oracle.queries.float().mean():.1f}")
    assert hit >= 0.8, f"targeted success {hit:.3f} < 0.8"


def test_exact_budget_and_early_stop(digits_mlp, hundred):
    x, y = hundred
    _, one = _run(digits_mlp, x, y, eps=0.05, max_queries=1)  # the initialization alone
    assert one.queries.tolist() == [1] * len(x)
    _, full = _run(digits_mlp, x, y, eps=0.05, max_queries=30, early_stop=False)
    assert full.queries.tolist() == [30] * len(x), "without early stop every sample spends its whole budget"
    _, early = _run(digits_mlp, x, y, eps=0.2, max_queries=30)
    assert float(early.queries.float().mean()) < 20, "solved samples must stop querying"


def test_an_oracle_with_a_smaller_budget_stops_the_attack_cleanly(digits_mlp, hundred):
    x, y = hundred
    outer = Oracle(digits_mlp, max_queries=7, n=len(x))
    square(outer, x, y, eps=0.02, max_queries=1000)
    assert int(outer.queries.max()) == 7


def test_label_only_oracle_is_rejected(digits_mlp, hundred):
    x, y = hundred
    with pytest.raises(GibbonInputError, match="needs scores"):
        square(Oracle(digits_mlp, output="label"), x, y, eps=0.1)


def test_images_only(digits_mlp, hundred):
    x, y = hundred
    with pytest.raises(GibbonInputError, match="images"):
        square(digits_mlp, x.flatten(1), y, eps=0.1)


def test_p_schedule_halves_on_the_papers_iterations():
    assert p_schedule(0.8, 0, 10000) == 0.8 and p_schedule(0.8, 10, 10000) == 0.8
    assert p_schedule(0.8, 11, 10000) == 0.4 and p_schedule(0.8, 51, 10000) == 0.2
    assert p_schedule(0.8, 9999, 10000) == 0.8 / 512
    assert p_schedule(0.8, 2, 1000) == 0.4  # rescaled: iteration 2 of 1000 is 20 of 10,000


def test_windows_place_and_extract_agree_with_slicing():
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(6, 2, 8, 7, generator=gen)
    corner, rows, cols, mask = _windows(6, 3, 8, 7, gen, t.device)
    for i in range(6):
        top, left = int(corner[0][i]), int(corner[1][i])
        want = t[i, :, top:top + 3, left:left + 3]
        assert torch.equal(_extract(t, corner, 3)[i], want)
        assert int(mask[i].sum()) == 9 and bool(mask[i, 0, top:top + 3, left:left + 3].all())
    patch = torch.randn(6, 2, 3, 3, generator=gen)
    assert torch.equal(_extract(_place(patch, rows, cols, mask), corner, 3), patch)


def test_registered_as_black_box():
    cls = ATTACKS["square"]
    assert cls.black_box and cls.randomized and cls.norms == ("linf", "l2") and cls().max_queries == 5000
