"""PATE: teachers on disjoint shards, noisy aggregation (LNMax, GNMax, Confident-GNMax), RDP analysis."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import _helpers

from gibbon import data
from gibbon.core.checks import GibbonInputError
from gibbon.privacy import pate

TEACHERS = 20
one_thread = _helpers.one_thread  # autouse fixture: one torch thread for this module


@pytest.fixture(scope="module")
def digits_votes():
    """20 softmax-regression teachers, each on ~60 of the 1197 digits training images, voting on val."""
    train, public = data.load("digits", "train"), data.load("digits", "val")
    out = pate.train_teachers(train, public.x, teachers=TEACHERS, arch="softmax-regression", epochs=30,
                              batch_size=16, lr=0.05, seed=0)
    return out, public


def test_teachers_vote_once_each_and_reproduce(digits_votes, tmp_path):
    out, public = digits_votes
    votes = out["votes"]
    assert votes.shape == (len(public.y), 10) and (votes.sum(axis=1) == TEACHERS).all()
    shards = pate.partition(1197, TEACHERS, seed=0)
    assert sum(len(s) for s in shards) == 1197 and len(torch.unique(torch.cat(shards))) == 1197  # disjoint
    path = pate.save_votes(tmp_path / "votes.npz", votes, predictions=out["predictions"], meta=out["meta"])
    back = pate.load_votes(path)  # np.load(allow_pickle=False) inside
    assert (back["votes"] == votes).all() and (back["predictions"] == out["predictions"]).all()
    assert back["meta"]["teachers"] == TEACHERS
    again = pate.train_teachers(data.load("digits", "train"), public.x[:50], teachers=TEACHERS,
                                arch="softmax-regression", epochs=30, batch_size=16, lr=0.05, seed=0)
    assert (again["votes"] == votes[:50]).all()


def test_the_ensemble_beats_a_single_teacher(digits_votes):
    out, public = digits_votes
    single = float((torch.as_tensor(out["predictions"]).long() == public.y[None]).double().mean())
    result = pate.run_pate(out["votes"], public.y, aggregator="gnmax", sigma2=1.0, delta=1e-5)
    # measured: teachers 0.851 on average, GNMax(sigma 1) labels 0.933
    assert result.label_accuracy > single + 0.05 and result.label_accuracy > 0.85, (single, result.label_accuracy)
    assert result.answered == result.queries == len(public.y)


def test_lnmax_with_huge_noise_gives_chance_labels(digits_votes):
    out, public = digits_votes
    noisy = pate.lnmax(out["votes"], gamma=1e-4, generator=torch.Generator().manual_seed(0))
    acc = float((noisy == public.y).double().mean())
    assert acc < 0.2, acc  # Lap(10,000) swamps counts of at most 20: chance is 0.1 (measured 0.133)
    same = pate.lnmax(out["votes"], gamma=1e-4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, same)
    clean = pate.lnmax(out["votes"], gamma=10.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(clean, torch.as_tensor(out["votes"]).argmax(dim=1))


def test_confident_gnmax_answers_fewer_as_the_threshold_rises(digits_votes):
    votes = digits_votes[0]["votes"]
    answered, expected = [], []
    for t in (0, 10, 15, 19):
        labels = pate.confident_gnmax(votes, threshold=t, sigma1=2.0, sigma2=1.0,
                                      generator=torch.Generator().manual_seed(0))
        answered.append(int((labels >= 0).sum()))
        cost = pate.confident_gnmax_privacy(votes, None, threshold=t, sigma1=2.0, sigma2=1.0, delta=1e-5)
        expected.append(cost.answered)
    # measured: 300, 283, 235, 122 answered
    assert answered[0] == len(votes) and answered == sorted(answered, reverse=True), answered
    assert answered[-1] < 0.8 * answered[0] and expected == sorted(expected, reverse=True), (answered, expected)


def test_agreeing_teachers_cost_less_than_the_data_independent_bound():
    unanimous = np.array([[250] + [0] * 9] * 300)
    tied = np.array([[125, 125] + [0] * 8] * 300)
    agree = pate.gnmax_privacy(unanimous, sigma=40.0, delta=1e-5)
    split = pate.gnmax_privacy(tied, sigma=40.0, delta=1e-5)
    assert agree.eps_data_dependent < 0.3 * agree.eps_data_independent, agree
    # a tie gives q near 1/2: Theorem 6 does not apply, the data-independent bound stays
    assert split.eps_data_dependent == pytest.approx(split.eps_data_independent, rel=1e-9), split
    conf = pate.confident_gnmax_privacy(unanimous, None, threshold=200, sigma1=150, sigma2=40, delta=1e-5)
    assert conf.eps_data_dependent < conf.eps_data_independent
    ln = pate.lnmax_privacy(unanimous[:100], gamma=0.05, delta=1e-5)
    assert ln.eps_data_dependent < 0.5 * ln.eps_data_independent, ln


def test_gnmax_data_independent_rdp_by_hand_and_against_opacus():
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = np.arange(2.0, 64.0)
    ours = 100 * pate.rdp_gnmax_data_independent(40.0, orders)
    assert ours[0] == pytest.approx(100 * 2 / 1600) and ours[8] == pytest.approx(100 * 10 / 1600)
    # one vote moves two counts: L2 sensitivity sqrt(2), i.e. Opacus's Gaussian with multiplier 40 / sqrt(2)
    theirs = compute_rdp(q=1.0, noise_multiplier=40.0 / math.sqrt(2), steps=100, orders=list(orders))
    assert np.allclose(ours, theirs, rtol=1e-9)
    eps, order = pate.eps_from_rdp(ours, orders, 1e-5)
    by_hand = min(100 * a / 1600 + math.log(1e5) / (a - 1) for a in orders)
    assert eps == pytest.approx(by_hand) and eps == pytest.approx(1.759, abs=1e-3)
    opacus_eps, _ = get_privacy_spent(orders=list(orders), rdp=list(theirs), delta=1e-5)
    assert opacus_eps <= eps < opacus_eps + 0.5  # Opacus converts more tightly (Balle et al. 2020)


def test_lnmax_data_dependent_against_the_2017_formula():
    counts = np.array([[200, 30, 20] + [0] * 7])
    gamma, order = 0.05, 5.0
    gaps = gamma * np.array([170, 180] + [200] * 7)
    q = float(np.sum((2 + gaps) / (4 * np.exp(gaps))))
    e, l = 2 * gamma, order - 1
    log_moment = min(0.5 * e * e * l * (l + 1), e * l,
                     math.log((1 - q) * ((1 - q) / (1 - math.exp(e) * q)) ** l + q * math.exp(e * l)))
    got = pate.rdp_lnmax_data_dependent(counts, gamma, [order])[0, 0]
    assert got == pytest.approx(log_moment / l, rel=1e-9)


def test_a_student_learns_from_the_answered_labels(digits_votes):
    out, public = digits_votes
    test = data.load("digits", "test")
    result = pate.run_pate(out["votes"], public.y, aggregator="confident-gnmax", threshold=12, sigma1=3.0,
                           sigma2=2.0, delta=1e-5, seed=0, public_x=public.x, test=test,
                           student_arch="softmax-regression", dataset=test, student_epochs=40)
    # measured: 263 of 300 answered, labels 0.970 right, student 0.853 on the test split
    assert 0.5 * result.queries < result.answered < result.queries, result
    assert result.label_accuracy > 0.9 and result.student_accuracy > 0.8, result
    d = result.to_dict()
    assert d["privacy"]["eps_data_dependent"] <= d["privacy"]["eps_data_independent"]
    assert set(d) >= {"queries", "answered", "label_accuracy", "privacy", "student_accuracy"}


@pytest.mark.parametrize("call, message", [
    (lambda: pate.partition(100, 1), "teachers must be"),
    (lambda: pate.partition(10, 11), "use fewer teachers"),
    (lambda: pate.lnmax([[3, 1]], gamma=0.0), "gamma must be"),
    (lambda: pate.gnmax([[3, 1]], sigma=-1.0), "sigma must be"),
    (lambda: pate.confident_gnmax([[3, 1]], threshold=-1, sigma1=1.0, sigma2=1.0), "threshold must be"),
    (lambda: pate.confident_gnmax([[3, 1]], threshold=1, sigma1=0.0, sigma2=1.0), "sigma1 must be"),
    (lambda: pate.gnmax_privacy([[3, 1]], sigma=1.0, delta=1.0), "delta must be in"),
    (lambda: pate.lnmax_privacy([[3, 1]], gamma=0.1, delta=0.0), "delta must be in"),
    (lambda: pate.lnmax([3, 1], gamma=0.1), "shape"),
    (lambda: pate.check_votes(np.zeros((4, 10)), num_classes=3), "shape"),
    (lambda: pate.gnmax([[3, 1], [1, 1]], sigma=1.0), "sum to the number of teachers"),
    (lambda: pate.gnmax([[3, -1]], sigma=1.0), ">= 0"),
    (lambda: pate.eps_from_rdp([1.0], [2.0, 3.0], 1e-5), "one RDP value per order"),
    (lambda: pate.rdp_gnmax_data_independent(1.0, [1.0]), "orders must be"),
])
def test_bad_input_says_what_to_fix(call, message):
    with pytest.raises(GibbonInputError, match=message):
        call()


def test_cli_trains_teachers_once_and_reuses_their_votes(tmp_path, monkeypatch, capsys):
    import json

    from _helpers import run_cli

    common = ["privacy", "pate", "--dataset", "digits", "--public", "200", "--queries", "150", "--out-dir",
              str(tmp_path), "--student-epochs", "0"]
    assert run_cli(monkeypatch, *common, "--teachers", "8", "--arch", "softmax-regression", "--teacher-epochs", "20",
                   "--aggregator", "confident-gnmax", "--threshold", "5", "--sigma1", "1", "--sigma2", "1") == 0
    first = json.loads((tmp_path / "pate.json").read_text())
    assert first["queries"] == 150 and 0 < first["answered"] <= 150 and first["label_accuracy"] > 0.6, first
    assert "data-dependent" in capsys.readouterr().out
    votes = pate.load_votes(tmp_path / "votes.npz")["votes"]
    assert votes.shape == (200, 10) and (votes.sum(1) == 8).all()
    # the second run only aggregates: no teachers trained, the same histograms, another mechanism
    assert run_cli(monkeypatch, *common, "--votes", str(tmp_path / "votes.npz"), "--aggregator", "lnmax",
                   "--gamma", "1000") == 0
    second = json.loads((tmp_path / "pate.json").read_text())
    assert second["aggregator"] == "lnmax" and second["answered"] == 150
    assert second["ensemble_accuracy"] == first["ensemble_accuracy"]  # the same histograms, not new teachers
    assert run_cli(monkeypatch, *common, "--queries", "300") == 2
