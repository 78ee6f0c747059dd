"""Shadow-model membership inference: LiRA (Carlini et al. 2022) and Shokri et al. 2017's attack
find the members of an overfit model, and nothing in a model that never saw them."""

from __future__ import annotations

import pytest
import torch
import _helpers
from _helpers import fit_full_batch

from gibbon import data
from gibbon.core.checks import GibbonInputError
from gibbon.oracles import Oracle
from gibbon.privacy.lira import LiRA, lira_attack, lira_leave_one_out, lira_scores
from gibbon.privacy.shadow import (IDENTITY, balanced_keep, load_shadow_scores, logit_confidence, query_pool,
                                   save_shadow_scores, shadow_attack, shift_views, train_shadows)

one_thread = _helpers.one_thread  # autouse in this module: one torch thread on a busy 2-core machine
POOL, SHADOWS, STEPS = 400, 16, 500  # 200 members / 200 non-members; ~5 s of shadow training on one thread


def _train(x, y, seed, steps=STEPS):
    """A 64-128-10 MLP trained full-batch to (near) zero loss on ~200 digits: it overfits."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                  torch.nn.Linear(128, 10))
    return fit_full_batch(net, x, y, steps=steps, lr=0.01)


@pytest.fixture(scope="module")
def setup():
    train = data.load("digits", "train")
    x, y = train.x[:POOL], train.y[:POOL]
    shadows = train_shadows(_train, x, y, n_shadows=SHADOWS, seed=1, progress=False)
    members = balanced_keep(2, POOL, seed=123)[0]  # the target's own random half, drawn apart from the shadows'
    target = _train(x[members], y[members], seed=999)
    elsewhere = _train(train.x[POOL:], train.y[POOL:], seed=5)  # never saw the pool
    return {"x": x, "y": y, "shadows": shadows, "members": members, "target": target, "elsewhere": elsewhere}


@pytest.mark.parametrize("global_variance", [True, False])
def test_online_lira_finds_the_members_of_an_overfit_model(setup, global_variance):
    s = setup
    result = lira_attack(s["target"], s["x"], s["y"], s["shadows"], s["members"], global_variance=global_variance)
    # measured: AUC 0.727 / 0.741, TPR@1%FPR 12.5% / 11.0%; a score without signal gives 0.5 and ~1%
    assert result.auc > 0.68 and result.tpr_at_fpr["0.01"] > 0.06, result.summary()
    assert result.attack.startswith("LiRA online") and result.members == result.non_members == 200


def test_offline_lira_finds_them_too(setup):
    s = setup
    result = LiRA(online=False)(s["target"], s["x"], s["y"], s["shadows"], s["members"])
    assert result.auc > 0.65 and result.tpr_at_fpr["0.01"] > 0.04, result.summary()  # measured 0.691, 8.0%
    assert result.attack.startswith("LiRA offline")


@pytest.mark.parametrize("online", [True, False])
def test_a_model_that_never_saw_them_gives_nothing_away(setup, online):
    s = setup
    result = lira_attack(s["elsewhere"], s["x"], s["y"], s["shadows"], s["members"], online=online)
    assert abs(result.auc - 0.5) < 0.1 and result.tpr_at_fpr["0.01"] <= 0.05, result.summary()  # 0.447 / 0.531


def test_leave_one_out_uses_a_shadow_as_the_target(setup):
    result = lira_leave_one_out(setup["shadows"], 0)
    assert result.auc > 0.65, result.summary()  # measured 0.704


def test_shokri_attack_beats_chance_on_the_overfit_model_only(setup):
    s = setup
    hit = shadow_attack(s["target"], s["x"], s["y"], s["shadows"], s["members"])
    miss = shadow_attack(s["elsewhere"], s["x"], s["y"], s["shadows"], s["members"])
    assert hit.auc > 0.62, hit.summary()  # measured 0.675
    assert abs(miss.auc - 0.5) < 0.1, miss.summary()  # measured 0.490
    assert hit.attack.startswith("shadow models (Shokri")


def test_queries_are_counted_and_probabilities_give_the_same_answer(setup):
    s = setup
    oracle = Oracle(s["target"])
    direct = lira_attack(s["target"], s["x"], s["y"], s["shadows"], s["members"])
    through = lira_attack(oracle, s["x"], s["y"], s["shadows"], s["members"])
    assert through.auc == pytest.approx(direct.auc, abs=1e-9)
    assert oracle.total == POOL * len(IDENTITY)  # one query per example and view, nothing else
    views = shift_views(1)
    query_pool(oracle, s["x"], s["y"], views=views)
    assert oracle.total == POOL * (1 + len(views))
    # an API answering probabilities: phi from p_y and the other classes' sum, not from logits
    probs = Oracle(lambda x: s["target"](x).softmax(1))
    from_probs = lira_attack(probs, s["x"], s["y"], s["shadows"], s["members"])
    assert from_probs.auc == pytest.approx(direct.auc, abs=0.01), (from_probs.summary(), direct.summary())


def test_logit_confidence_is_stable_from_logits_and_from_probabilities():
    y = torch.tensor([0, 1])
    logits = torch.tensor([[30.0, 0.0, -2.0], [1.0, 2.0, 0.5]])
    expected = torch.stack([30 - torch.logsumexp(torch.tensor([0.0, -2.0]), 0),
                            2 - torch.logsumexp(torch.tensor([1.0, 0.5]), 0)]).double()
    assert torch.allclose(logit_confidence(logits, y), expected, atol=1e-6)
    # p_y = 1 - 1e-13 rounds to 1 in float32, yet the other classes' sum keeps phi finite and right
    assert torch.allclose(logit_confidence(logits.double().softmax(1), y), expected, atol=1e-4)
    rounded = torch.tensor([[1.0, 0.0, 0.0]])  # a rounded API answer: finite, not inf
    assert torch.isfinite(logit_confidence(rounded, torch.tensor([0]))).all()


def test_shadows_resume_and_saved_scores_reload_to_the_same_result(setup, tmp_path):
    s = setup
    x, y = s["x"], s["y"]
    first = train_shadows(lambda a, b, seed: _train(a, b, seed, steps=50), x, y, n_shadows=4, seed=3,
                          out_dir=tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == [f"shadow-00{i}.npz" for i in range(4)] + ["shadows.npz"]

    def refuse(*args):
        raise AssertionError("a saved shadow was trained again")

    again = train_shadows(refuse, x, y, n_shadows=4, seed=3, out_dir=tmp_path, progress=False)
    reloaded = load_shadow_scores(save_shadow_scores(tmp_path / "copy.npz", first))
    for other in (again, reloaded):
        assert torch.equal(other.phi, first.phi) and torch.equal(other.keep, first.keep)
        assert other.views == first.views and other.pool == first.pool
    a = lira_attack(s["target"], x, y, first, s["members"], global_variance=False)
    b = lira_attack(s["target"], x, y, reloaded, s["members"], global_variance=False)
    assert a.to_dict() == b.to_dict()
    with pytest.raises(GibbonInputError, match="another run"):
        train_shadows(refuse, x, y, n_shadows=4, seed=4, out_dir=tmp_path, progress=False)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(GibbonInputError, match="cannot read shadow scores"):
        load_shadow_scores(tmp_path / "bad.npz")


def test_bad_inputs_are_one_line_errors(setup):
    s = setup
    x, y, shadows, members, target = s["x"], s["y"], s["shadows"], s["members"], s["target"]
    with pytest.raises(GibbonInputError, match="at least 2 shadows"):
        train_shadows(_train, x, y, n_shadows=1)
    with pytest.raises(GibbonInputError, match="one label per input"):
        train_shadows(_train, x, y[:-1], n_shadows=4)
    with pytest.raises(GibbonInputError, match="pool has 399"):
        lira_attack(target, x[:-1], y[:-1], shadows, members[:-1])
    with pytest.raises(GibbonInputError, match="another pool"):
        lira_attack(target, x.flip(0), y.flip(0), shadows, members)
    with pytest.raises(GibbonInputError, match="NaN"):
        lira_attack(lambda z: target(z) * float("nan"), x, y, shadows, members)
    with pytest.raises(GibbonInputError, match="bool mask"):
        lira_attack(target, x, y, shadows, members.long())
    with pytest.raises(GibbonInputError, match="at least 4 shadows"):
        two = type(shadows)(shadows.phi[:2], shadows.probs[:2], balanced_keep(2, POOL), shadows.views, shadows.pool)
        lira_scores(shadows.phi[0], two, global_variance=False)
    with pytest.raises(GibbonInputError, match="IN and OUT"):
        none_in = type(shadows)(shadows.phi, shadows.probs, torch.zeros_like(shadows.keep), shadows.views)
        lira_scores(shadows.phi[0], none_in)
    nan = type(shadows)(shadows.phi * float("nan"), shadows.probs, shadows.keep, shadows.views, shadows.pool)
    with pytest.raises(GibbonInputError, match="NaN"):
        lira_attack(target, x, y, nan, members)
    with pytest.raises(GibbonInputError, match="labels only"):
        lira_attack(Oracle(target, output="label"), x, y, shadows, members)
