"""Influence functions (Koh & Liang 2017, arXiv:1703.04730): inverse-HVPs, the leave-one-out check,
helpful/harmful ordering and the influence-guided poisoning attack, on 8x8 digits (binary 3 vs 8)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gibbon import data
from gibbon.core.checks import GibbonInputError
from gibbon.poisoning import influence as inf
from gibbon.poisoning.influence_attack import influence_poison, perturbation_influence, random_poison
from gibbon.zoo.architectures import BinaryLogits

WD = 0.01


@pytest.fixture(scope="module")
def problem():
    tr = data.load("digits", "train", classes=[3, 8])
    te = data.load("digits", "test", classes=[3, 8])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), BinaryLogits(64))
    model = inf.lbfgs_fit(model, tr.x, tr.y, weight_decay=WD)
    return model, tr.x, tr.y, te.x, te.y


def _fit(x, y, init, n=None):
    return inf.lbfgs_fit(init, x, y, weight_decay=WD, n_total=n, max_iter=200, rounds=3)


def _test_point(problem):
    model, *_, tx, ty = problem
    with torch.no_grad():
        loss = nn.functional.cross_entropy(model(tx.double()), ty, reduction="none")
    i = int(loss.argmax())  # the hardest test point: the most informative influences
    return tx[i:i + 1], ty[i:i + 1]


def test_exact_inverse_hvp_matches_direct_solve(problem):
    model, x, y, *_ = problem
    fn = inf.loss_function(model)
    v = torch.randn(len(fn.theta0), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # a direct Hessian from torch.autograd.functional on the mean loss, independent of our builder
    f = lambda th: fn.losses(th, x, y).mean() + WD / 2 * th @ th  # noqa: E731
    h = torch.autograd.functional.hessian(f, fn.theta0)
    got = inf.inverse_hvp(fn, fn.theta0, x, y, v, weight_decay=WD, damping=0.1)
    want = torch.linalg.solve(h + 0.1 * torch.eye(len(v), dtype=h.dtype), v)
    assert torch.allclose(got, want, rtol=1e-8, atol=1e-10)
    assert torch.allclose(inf.hvp(fn, fn.theta0, x, y, v, weight_decay=WD), h @ v, rtol=1e-8, atol=1e-10)


def test_lissa_approaches_exact(problem):
    model, x, y, *_ = problem
    fn = inf.loss_function(model)
    v = inf.mean_grad(fn, fn.theta0, *_test_point(problem))
    exact = inf.inverse_hvp(fn, fn.theta0, x, y, v, weight_decay=WD, damping=0.1)
    lissa = inf.inverse_hvp(fn, fn.theta0, x, y, v, weight_decay=WD, damping=0.1, method="lissa",
                            lissa_depth=200, lissa_repeats=2, lissa_batch=100, lissa_scale=1.2)
    cos = float(exact @ lissa / (exact.norm() * lissa.norm()))
    assert cos > 0.98 and float((lissa - exact).norm() / exact.norm()) < 0.15
    short = inf.inverse_hvp(fn, fn.theta0, x, y, v, weight_decay=WD, damping=0.1, method="lissa",
                            lissa_depth=3, lissa_repeats=1, lissa_scale=1.2)
    assert float((short - exact).norm() / exact.norm()) > 0.3  # depth matters: the recursion is real


def test_leave_one_out_correlation(problem):
    model, x, y, *_ = problem
    tx, ty = _test_point(problem)
    scores = inf.influence_scores(model, x, y, tx, ty, weight_decay=WD)
    pred = inf.predicted_loo_change(scores, len(x))
    idx = inf.top_by_magnitude(scores, 25)
    res = inf.leave_one_out_check(lambda a, b, m: _fit(a, b, m, len(x)), model, x, y, tx, ty, idx, pred)
    assert res.pearson >= 0.9 and res.spearman >= 0.8, res.to_dict()
    assert inf.pearson(-res.predicted, res.actual) <= -0.9  # a flipped sign fails
    noise = torch.randn(len(idx), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(inf.pearson(noise, res.actual)) < 0.5  # random scores fail
    # magnitudes agree too, not only the ordering (the 1/n scaling is right)
    assert 0.7 < float(res.predicted @ res.actual / (res.predicted @ res.predicted)) < 1.4


def test_removing_harmful_points_lowers_test_loss(problem):
    model, x, y, tx, ty = problem
    scores = inf.influence_scores(model, x, y, tx, ty, weight_decay=WD)  # on the whole test set
    helpful, harmful = inf.most_influential(scores, 10)
    assert float(scores[harmful].min()) > 0 > float(scores[helpful].max())
    base = inf.test_loss(_fit(x, y, model, len(x)), tx, ty)

    def without(rows):
        keep = torch.ones(len(x), dtype=torch.bool)
        keep[rows] = False
        return inf.test_loss(_fit(x[keep], y[keep], model, len(x)), tx, ty) - base

    assert without(harmful) < 0 < without(helpful)


def test_last_layer_and_mode_untouched(problem):
    model, x, y, tx, ty = problem
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 2))
    net.train()
    flags = [p.requires_grad for p in net.parameters()]
    s_last = inf.influence_scores(net, x[:100], y[:100], tx[:5], ty[:5], weight_decay=WD, params="last",
                                  damping=0.01)
    assert s_last.shape == (100,) and torch.isfinite(s_last).all()
    assert net.training and flags == [p.requires_grad for p in net.parameters()]
    assert inf.chosen_names(net, "last") == ["3.weight", "3.bias"]


def test_influence_poison_beats_random(problem):
    model, x, y, tx, ty = problem
    x, y = x[:150], y[:150]  # a small set: one point carries weight
    model = _fit(x, y, model)
    with torch.no_grad():
        margin = model(tx.double()).diff(dim=1).squeeze(1) * (2 * ty - 1)
    candidates = torch.argsort(margin)[(torch.sort(margin).values > 0)][:5]  # correct, near the boundary
    fit = lambda a, b, m: _fit(a, b, m)  # noqa: E731
    gain = base_gain = 0.0
    flips = random_flips = 0
    for i in candidates.tolist():
        r = influence_poison(fit, model, x, y, tx[i], ty[i], weight_decay=WD, n_poison=2, eps=0.3, steps=4)
        b = random_poison(fit, model, x, y, tx[i], ty[i], r.poison_indices, eps=0.3, seed=i)
        gain += r.target_loss_after - r.target_loss_before
        base_gain += b.target_loss_after - b.target_loss_before
        flips, random_flips = flips + r.flipped, random_flips + b.flipped
        assert float((r.poisoned_x - x[r.poison_indices]).abs().max()) <= 0.3 + 1e-6
    assert flips > random_flips and gain > 5 * max(base_gain, 0.0) and gain > 0


def test_perturbation_influence_matches_finite_difference(problem):
    model, x, y, tx, ty = problem
    g = perturbation_influence(model, x, y, tx[:1], ty[:1], weight_decay=WD, rows=[0, 1])
    scores = lambda xx: inf.influence_scores(model, xx, y, tx[:1], ty[:1], weight_decay=WD)[:2]  # noqa: E731
    d = torch.zeros_like(x)
    d[:2] = 1e-3 * g.sign().float()
    # the Hessian is held at the model's, so only the score of the moved rows changes to first order
    fd = (scores(x + d) - scores(x - d)) / 2
    assert torch.allclose(fd, (g * d[:2].double()).flatten(1).sum(1), rtol=0.05)


def test_bad_inputs(problem):
    model, x, y, tx, ty = problem
    kw = dict(weight_decay=WD)
    with pytest.raises(GibbonInputError, match="training set is empty"):
        inf.influence_scores(model, x[:0], y[:0], tx, ty, **kw)
    with pytest.raises(GibbonInputError, match="test set is empty"):
        inf.influence_scores(model, x, y, tx[:0], ty[:0], **kw)
    with pytest.raises(GibbonInputError, match="disagree"):
        inf.influence_scores(model, x, y[:-1], tx, ty, **kw)
    with pytest.raises(GibbonInputError, match="damping"):
        inf.influence_scores(model, x, y, tx, ty, damping=-1.0, **kw)
    with pytest.raises(GibbonInputError, match="method"):
        inf.influence_scores(model, x, y, tx, ty, method="cg", **kw)
    with pytest.raises(GibbonInputError, match="params"):
        inf.influence_scores(model, x, y, tx, ty, params="first", **kw)
    with pytest.raises(GibbonInputError, match="k must be"):
        inf.most_influential(torch.zeros(5), 6)
    with pytest.raises(GibbonInputError, match="predicted has"):
        inf.leave_one_out_check(_fit, model, x, y, tx, ty, [0, 1], torch.zeros(3))
    with pytest.raises(GibbonInputError, match="eps"):
        influence_poison(_fit, model, x, y, tx[0], ty[0], weight_decay=WD, eps=0.0)
    with pytest.raises(GibbonInputError, match="one target"):
        influence_poison(_fit, model, x, y, tx[:2], ty[:2], weight_decay=WD)
