"""The Oracle: query counting (total and per sample), per-sample budgets, gradient refusal, output hardening."""

from __future__ import annotations

import pytest
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.oracles import (
    UNLIMITED,
    GradientRefusedError,
    Oracle,
    QueryBudgetExceeded,
    as_oracle,
    share_total,
    to_probabilities,
)


class Rows(torch.nn.Module):
    """A linear model that records how many rows it was asked for."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.linear(x)


def test_counts_total_and_per_sample():
    oracle = Oracle(Rows(), n=3)
    oracle(torch.zeros(3, 4))  # default: row i is sample i
    oracle(torch.zeros(4, 4), idx=torch.tensor([2, 2, 0, 2]))
    assert oracle.total == 7
    assert oracle.queries.tolist() == [2, 1, 4]
    assert oracle.remaining().tolist() == [UNLIMITED] * 3


def test_per_sample_counts_grow_without_n():
    oracle = Oracle(Rows())
    oracle(torch.zeros(2, 4), idx=[5, 1])
    assert oracle.queries.tolist() == [0, 1, 0, 0, 0, 1]


def test_budget_is_checked_before_the_model_runs():
    model = Rows()
    oracle = Oracle(model, max_queries=3, n=2)
    oracle(torch.zeros(3, 4), idx=torch.tensor([0, 0, 1]))
    assert oracle.remaining().tolist() == [1, 2]
    assert oracle.remaining(torch.tensor([1, 1])).tolist() == [2, 2]
    with pytest.raises(QueryBudgetExceeded, match="sample 0 to 4 queries, over its budget max_queries=3"):
        oracle(torch.zeros(2, 4), idx=torch.tensor([0, 0]))
    assert issubclass(QueryBudgetExceeded, RuntimeError)
    assert model.rows == 3 and oracle.total == 3, "a refused call must neither run the model nor count"
    oracle(torch.zeros(1, 4), idx=torch.tensor([0]))  # exactly the budget is fine
    assert oracle.remaining().tolist() == [0, 2]


def test_refuses_inputs_that_require_grad_and_gives_no_graph():
    model = Rows()
    oracle = Oracle(model)
    with pytest.raises(GradientRefusedError, match="never gives gradients.*x.detach"):
        oracle(torch.zeros(2, 4, requires_grad=True))
    assert model.rows == 0 and oracle.total == 0
    out = oracle(torch.zeros(2, 4))
    assert out.grad_fn is None and not out.requires_grad
    assert all(p.grad is None for p in model.parameters())


def test_model_state_untouched():
    model = Rows().train(True)
    Oracle(model)(torch.zeros(2, 4))
    assert model.training and all(p.requires_grad for p in model.linear.parameters())


def test_label_and_rounded_outputs():
    model = Rows()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    scores = model(x).detach()
    labels = Oracle(model, output="label")(x)
    assert labels.dtype == torch.int64 and labels.shape == (5,) and torch.equal(labels, scores.argmax(1))
    rounded = Oracle(model, output="rounded", decimals=1)(x)
    assert torch.equal(rounded, torch.round(scores, decimals=1))
    with pytest.raises(GibbonInputError, match="output must be one of"):
        Oracle(model, output="logits")


def test_as_oracle_passes_an_oracle_through_and_views_it_with_a_budget():
    inner = Oracle(Rows(), max_queries=5, n=2)
    assert as_oracle(inner) is inner
    view = as_oracle(inner, max_queries=3, n=2)
    assert view is not inner and isinstance(view, Oracle)
    view(torch.zeros(2, 4), idx=[0, 0])
    assert view.queries.tolist() == [2, 0] and inner.queries.tolist() == [2, 0]
    assert view.remaining().tolist() == [1, 3]  # its own budget, then the inner one's
    inner(torch.zeros(3, 4), idx=[1, 1, 1])
    assert view.remaining().tolist() == [1, 2]
    wrapped = as_oracle(torch.nn.Linear(4, 3), max_queries=2)
    assert isinstance(wrapped, Oracle) and wrapped.max_queries == 2


def test_bad_idx_and_budget():
    oracle = Oracle(Rows(), n=2)
    with pytest.raises(GibbonInputError, match="one sample index per row"):
        oracle(torch.zeros(3, 4), idx=[0, 1])
    with pytest.raises(GibbonInputError, match="out of range"):
        oracle(torch.zeros(1, 4), idx=[2])
    with pytest.raises(GibbonInputError, match="max_queries"):
        Oracle(Rows(), max_queries=-1)


def test_to_probabilities():
    probs = torch.tensor([[0.2, 0.8], [1.0, 0.0]])
    assert to_probabilities(probs) is probs
    logits = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert torch.allclose(to_probabilities(logits), logits.softmax(1))


def test_evaluate_takes_an_oracle_target_with_black_box_attacks_only():
    from gibbon import evaluate
    from gibbon.data import load

    test = load("digits", "test", n=40)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(GibbonInputError, match="needs gradients"):
        evaluate(Oracle(net), test, ["pgd"], eps=0.1)
    report = evaluate(Oracle(net), test, ["square:max_queries=20"], eps=0.1, progress=False)
    (result,) = report.results
    assert result.gradients == 0 and result.forwards > 0
    assert not any("gradient" in w for w in report.warnings), report.warnings


# --------------------------------------------------------------------------- a budget shared by all samples


def test_share_total_splits_the_rest_evenly_within_each_budget():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        left = torch.randint(0, 30, (int(torch.randint(1, 12, (1,), generator=gen)),), generator=gen)
        total = int(torch.randint(0, 120, (1,), generator=gen))
        share = share_total(left, total)
        assert bool((share >= 0).all()) and bool((share <= left).all())
        assert int(share.sum()) == min(total, int(left.sum())), "the whole total (or every budget) is handed out"
        # as even as the budgets allow: a sample below its own budget never has 2 fewer than another
        below = share < left
        if below.any():
            assert int(share.max()) - int(share[below].min()) <= 1
    assert share_total(torch.tensor([UNLIMITED, UNLIMITED]), 5).tolist() == [3, 2]
    assert share_total(torch.zeros(0, dtype=torch.int64), 5).tolist() == []


def test_max_total_is_enforced_before_the_model_runs_and_shared_by_remaining():
    model = Rows()
    oracle = Oracle(model, max_total=5, max_queries=4, n=3)
    assert oracle.total_remaining() == 5 and oracle.remaining().tolist() == [2, 2, 1]
    assert oracle.remaining(torch.tensor([2])).tolist() == [4], "one sample alone is capped by its own budget"
    oracle(torch.zeros(4, 4), idx=torch.tensor([0, 0, 1, 2]))
    assert oracle.total_remaining() == 1 and int(oracle.remaining().sum()) == 1
    with pytest.raises(QueryBudgetExceeded, match="asks 2 queries but only 1 are left in all"):
        oracle(torch.zeros(2, 4), idx=torch.tensor([1, 2]))
    assert model.rows == 4 and oracle.total == 4, "a refused call must neither run the model nor count"
    oracle(torch.zeros(1, 4), idx=torch.tensor([1]))
    assert oracle.total_remaining() == 0 and oracle.remaining().tolist() == [0, 0, 0]
    with pytest.raises(GibbonInputError, match="max_total"):
        Oracle(Rows(), max_total=-1)


def test_affordable_picks_the_first_samples_the_shared_total_pays_for():
    oracle = Oracle(Rows(), max_total=7, max_queries=3, n=4)
    oracle(torch.zeros(3, 4), idx=torch.tensor([0, 0, 0]))  # sample 0 has spent its own budget
    ids = torch.tensor([0, 1, 2, 3])
    assert oracle.affordable(ids, 2).tolist() == [False, True, True, False]  # 4 left: two samples of 2
    assert oracle.affordable(ids, 5).tolist() == [False] * 4
    assert oracle.affordable(torch.tensor([3, 1]), 2).tolist() == [True, True], "the order of ids decides"
    assert Oracle(Rows(), n=2).affordable(torch.tensor([0, 1]), 10**6).tolist() == [True, True]


def test_a_models_own_budget_and_an_inner_oracles_total_are_shared_too():
    class Metered(Rows):  # a model that reports its own budget, as HttpOracle does with the server's
        def __init__(self, budget):
            super().__init__()
            self.budget = budget

        def queries_left(self):
            return self.budget - self.rows

    inner = Oracle(Metered(6))
    outer = Oracle(inner, max_queries=4, n=2)
    assert outer.total_remaining() == 6 and outer.remaining().tolist() == [3, 3]
    outer(torch.zeros(5, 4), idx=torch.tensor([0, 0, 0, 1, 1]))
    assert outer.total_remaining() == inner.total_remaining() == 1
    with pytest.raises(QueryBudgetExceeded, match="left in all"):
        outer(torch.zeros(2, 4), idx=torch.tensor([1, 1]))
    assert Oracle(inner, max_total=0).total_remaining() == 0
    assert Oracle(Rows()).total_remaining() == UNLIMITED


def test_a_shared_total_is_seen_and_its_refusals_counted_through_a_counting_wrapper():
    from gibbon.evaluation.counting import CountingModel

    shared = Oracle(Rows(), max_total=5)
    attack_view = Oracle(CountingModel(shared), max_queries=4, n=3)  # what a black-box attack builds
    assert attack_view.total_remaining() == 5 and attack_view.remaining().tolist() == [2, 2, 1]
    assert attack_view.affordable(torch.arange(3), 2).tolist() == [True, True, False]
    assert attack_view.refusals == shared.refusals == 1  # the refusal reached the budget's owner
    with pytest.raises(QueryBudgetExceeded, match="only 5 are left"):
        attack_view(torch.zeros(6, 4), idx=torch.tensor([0, 0, 1, 1, 2, 2]))
    assert shared.refusals == 2 and shared.total == 0
    with pytest.raises(QueryBudgetExceeded, match="max_queries=4"):  # its own budget: not the shared total's
        attack_view(torch.zeros(5, 4), idx=torch.zeros(5, dtype=torch.long))
    assert shared.refusals == 2
    assert Oracle(CountingModel(Rows())).total_remaining() == UNLIMITED


def test_holding_keeps_queries_back_and_refusals_are_counted():
    oracle = Oracle(Rows(), max_total=10)
    with oracle.holding(7):
        assert oracle.total_remaining() == 3 and oracle.remaining(torch.arange(2)).tolist() == [2, 1]
        assert oracle.affordable(torch.arange(3), 2).tolist() == [True, False, False]
        assert oracle.refusals == 1  # the total left out a sample its own budget could pay for
        with pytest.raises(QueryBudgetExceeded, match="only 3 are left"):
            oracle(torch.zeros(4, 4))
        assert oracle.refusals == 2 and oracle.total == 0
        oracle(torch.zeros(3, 4))
    assert oracle.total_remaining() == 7 and oracle.held == 0  # released on the way out
    oracle(torch.zeros(7, 4))
    assert oracle.total_remaining() == 0
    unlimited = Oracle(Rows())
    with unlimited.holding(5):
        assert unlimited.total_remaining() == UNLIMITED  # nothing to hold back from
