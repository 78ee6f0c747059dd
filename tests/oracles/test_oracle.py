"""The Oracle: query counting (total and per sample), per-sample budgets, gradient refusal, output hardening."""

from __future__ import annotations

import pytest
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.oracles import UNLIMITED, GradientRefusedError, Oracle, QueryBudgetExceeded, as_oracle, to_probabilities


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
