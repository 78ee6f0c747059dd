"""Boundary attack (arXiv:1712.04248): known answers, effectiveness, query budget, label-only access.

Measured (seed 0, 1 thread). Binary linear model (32 points, closed-form minimal L2 distance
|f| / ||w||_2): distance / exact median 1.21 and max 1.67 at 1,000 queries, 1.0012 and 1.0051 at
2,000. Digits MLP, 100 test digits (97 correct): 100% success at 1,000 and 2,000 queries, median
L2 0.619 and 0.468 (HopSkipJump at 1,000: 0.476; C&W-L2: 0.373); targeted (y + 1) % 10 at 2,000
queries: 100%, median L2 0.753. Thresholds leave room for seeds.
"""

from __future__ import annotations

import torch

from gibbon.attacks import ATTACKS, Boundary, boundary
from gibbon.attacks.boundary import _proposals, _Window
from gibbon.core.norms import L2
from _blackbox import hundred, one_thread, run_counted  # noqa: F401 (fixtures)
from _linear import exact_margin, linear_case

BOUNDS = (-100.0, 100.0)  # far away: the box never limits the linear case


def _run(model, x, y, seed=0, **kw):
    kw.setdefault("max_queries", 2000)
    return run_counted(boundary, model, x, y, seed=seed, **kw)


def test_linear_model_close_to_the_closed_form():
    model, x, y, f = linear_case(0)
    x_adv, oracle = _run(model, x, y, bounds=BOUNDS)
    ratio = L2.distance(x_adv - x) / exact_margin(model, f, "l2")
    fooled = model(x_adv).argmax(1) != y
    print(f"boundary l2, 2000 queries: distance / exact median {ratio.median():.4f} max {ratio.max():.4f}")
    assert bool(fooled.all()), f"{int((~fooled).sum())} of {len(x)} not adversarial (a no-op attack fails here)"
    assert float(ratio.min()) >= 1 - 1e-6, "an adversarial point below the exact margin: the distance is wrong"
    assert float(ratio.median()) <= 1.05 and float(ratio.max()) <= 1.2, ratio
    assert int(oracle.queries.max()) <= 2000


def test_effective_on_digits(digits_mlp, hundred):
    x, y = hundred
    x_adv, oracle = _run(digits_mlp, x, y)
    correct = digits_mlp(x).argmax(1) == y
    fooled = (digits_mlp(x_adv).argmax(1) != y) & correct
    rate = float(fooled.sum() / correct.sum())
    median = float(L2.distance(x_adv - x)[fooled].median())
    print(f"boundary digits: success {rate:.3f}, median L2 {median:.4f}, queries max {int(oracle.queries.max())}")
    assert rate >= 0.95, f"success {rate:.3f} < 0.95"
    assert median <= 0.6, f"median L2 {median:.4f} > 0.6"
    assert int(oracle.queries.max()) <= 2000 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert bool(torch.equal(x_adv[~correct], x[~correct])), "misclassified inputs are their own minimal adversarial"


def test_targeted_on_digits(digits_mlp, hundred):
    x, y = hundred
    target = (y + 1) % 10
    x_adv, oracle = _run(digits_mlp, x, y, target=target)
    hit = digits_mlp(x_adv).argmax(1) == target
    median = float(L2.distance(x_adv - x)[hit].median())
    print(f"boundary targeted digits: {hit.float().mean():.3f} reach the target, median L2 {median:.4f}")
    assert float(hit.float().mean()) >= 0.95 and median <= 0.95
    assert int(oracle.queries.max()) <= 2000


def test_proposals_keep_the_papers_geometry():
    """Step 2 lands on the sphere of radius d(o, x) (orthogonal step delta d), step 3 moves eps d closer."""
    gen = torch.Generator().manual_seed(0)
    x, cur = torch.rand(6, 1, 8, 8, generator=gen) * 0.2 + 0.4, torch.rand(6, 1, 8, 8, generator=gen) * 0.2 + 0.4
    spherical, source = torch.full((6,), 0.05), torch.full((6,), 0.01)
    cand, on_sphere = _proposals(x, cur, spherical, source, (0.0, 1.0), gen)  # no clipping inside (0, 1)
    d = L2.distance(x - cur)
    assert torch.allclose(L2.distance(x - on_sphere), d, rtol=1e-5)
    s = (1 + 0.05 ** 2) ** 0.5  # on_sphere - cur = diff (1 - 1/s) + eta / s with eta orthogonal, |eta| = 0.05 d
    assert torch.allclose(L2.distance(on_sphere - cur), d * ((1 - 1 / s) ** 2 + (0.05 / s) ** 2) ** 0.5, rtol=1e-4)
    assert torch.allclose(L2.distance(x - cand), d * (1 - 0.01), rtol=1e-5)


def test_window_statistics():
    w = _Window(2, 3, "cpu")
    w.add(torch.tensor([0, 1]), torch.tensor([True, False]))
    w.add(torch.tensor([0]), torch.tensor([True]))
    assert w.rate(torch.tensor([0, 1]))[1].tolist() == [False, False]
    w.add(torch.tensor([0]), torch.tensor([False]))
    rate, full = w.rate(torch.tensor([0]))
    assert bool(full[0]) and abs(float(rate[0]) - 2 / 3) < 1e-9
    w.clear(torch.tensor([0]))
    assert not bool(w.rate(torch.tensor([0]))[1][0])


def test_registered_as_decision_based():
    cls = ATTACKS["boundary"]
    assert cls is Boundary and cls.black_box and cls.minimal and cls.randomized and not cls.targeted_only
    assert cls.norms == ("l2",) and cls().max_queries == 10_000
