"""Path-finding extraction of decision trees (Tramèr et al. 2016, arXiv:1609.02943, section 4.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.tree import DecisionTreeClassifier

from gibbon import data
from gibbon.core.checks import GibbonInputError
from gibbon.extraction.equation_solving import fidelity
from gibbon.extraction.path_finding import TreeExtractionResult, extract_tree, leaf_identity_oracle
from gibbon.oracles import Oracle, SklearnModel

SHAPE = (1, 8, 8)


def _flat(x: torch.Tensor) -> np.ndarray:
    return x.reshape(len(x), -1).numpy()


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train"), data.load("digits", "test")


@pytest.fixture(scope="module")
def box_points():
    return torch.rand(4000, *SHAPE, generator=torch.Generator().manual_seed(1))


def _tree(train, **params) -> DecisionTreeClassifier:
    return DecisionTreeClassifier(random_state=0, **params).fit(_flat(train.x), train.y.numpy())


@pytest.mark.parametrize("max_depth", [8, None])
def test_recovers_every_leaf_with_full_fidelity(digits, box_points, max_depth):
    train, test = digits
    tree = _tree(train, max_depth=max_depth)
    oracle = Oracle(leaf_identity_oracle(tree, SHAPE))
    result = extract_tree(oracle, SHAPE)
    victim = SklearnModel(tree, SHAPE)
    assert isinstance(result, TreeExtractionResult) and result.complete
    assert result.leaves == tree.get_n_leaves()
    assert result.queries == oracle.total > 0
    assert fidelity(result.model, victim, test.x) == 1.0
    assert fidelity(result.model, victim, box_points) >= 0.99
    # the thresholds carry the information: the majority-class guess agrees on few random points
    majority = int(np.bincount(train.y.numpy()).argmax())
    assert float((victim(box_points).argmax(1) == majority).float().mean()) < 0.3


def test_every_split_threshold_is_found_within_tol(digits):
    tree = _tree(digits[0], max_depth=8)
    tol = 1e-6
    result = extract_tree(leaf_identity_oracle(tree, SHAPE), SHAPE, tol=tol)
    nodes = tree.tree_
    for feature, threshold in zip(nodes.feature, nodes.threshold):
        if feature < 0:  # a leaf
            continue
        found = np.asarray(result.thresholds[int(feature)])
        assert bool(((found <= threshold) & (found > threshold - tol)).any()), (feature, threshold)


def test_too_small_budget_stops_cleanly(digits, box_points):
    tree = _tree(digits[0], max_depth=8)
    victim = SklearnModel(tree, SHAPE)
    oracle = Oracle(leaf_identity_oracle(tree, SHAPE))
    result = extract_tree(oracle, SHAPE, max_queries=500)
    assert not result.complete
    assert result.queries == oracle.total <= 500
    assert result.leaves < tree.get_n_leaves()
    assert fidelity(result.model, victim, box_points) < 0.9  # an unfinished extraction is not the tree
    shared = Oracle(leaf_identity_oracle(tree, SHAPE), max_total=300)  # the oracle's own budget
    limited = extract_tree(shared, SHAPE)
    assert not limited.complete and limited.queries == shared.total <= 300


def test_first_query_only_is_a_constant_model(digits, box_points):
    tree = _tree(digits[0], max_depth=8)
    result = extract_tree(leaf_identity_oracle(tree, SHAPE), SHAPE, max_queries=1)
    assert (result.leaves, result.queries, result.complete) == (1, 1, False)
    assert fidelity(result.model, SklearnModel(tree, SHAPE), box_points) < 0.5  # far from the 0.99 a full run gets


def test_per_leaf_probability_rows_are_identifiers(digits, box_points):
    train, test = digits
    tree = _tree(train, max_depth=6, min_samples_leaf=10)
    leaf_values = tree.tree_.value[tree.tree_.children_left < 0, 0, :]
    assert len({row.tobytes() for row in leaf_values}) == tree.get_n_leaves()  # the premise: rows tell leaves apart
    victim = SklearnModel(tree, SHAPE)  # answers log predict_proba
    oracle = Oracle(victim)
    result = extract_tree(oracle, SHAPE, label_of="argmax")
    assert result.complete and result.leaves == tree.get_n_leaves() and result.queries == oracle.total
    assert fidelity(result.model, victim, test.x) == 1.0
    assert fidelity(result.model, victim, box_points) >= 0.99


def test_single_leaf_tree_and_other_shapes():
    x = np.random.default_rng(0).random((40, 3))
    constant = DecisionTreeClassifier().fit(x, np.zeros(40, dtype=int))
    result = extract_tree(leaf_identity_oracle(constant, (3,)), (3,), num_classes=2)
    assert (result.leaves, result.complete, result.thresholds) == (1, True, {})
    assert result.model(torch.rand(5, 3)).argmax(1).tolist() == [0] * 5
    tree = DecisionTreeClassifier(random_state=0).fit(x, (x[:, 0] + x[:, 2] > 1).astype(int))
    result = extract_tree(leaf_identity_oracle(tree, (3,)), (3,), bounds=(-1.0, 2.0))
    probe = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0)) * 3 - 1
    assert result.leaves == tree.get_n_leaves()
    assert bool((result.model.predict(probe).numpy() == tree.predict(probe.double().numpy())).all())


def test_bad_inputs_raise_one_line_errors(digits):
    tree = _tree(digits[0], max_depth=3)
    api = leaf_identity_oracle(tree, SHAPE)
    bad = [dict(tol=0), dict(tol=-1e-3), dict(bounds=(1.0, 0.0)), dict(bounds=(0.0, float("inf"))),
           dict(label_of="first"), dict(max_queries=-1), dict(max_queries=2.5), dict(max_queries=0),
           dict(start=[2.0] * 64)]
    for kwargs in bad:
        with pytest.raises(GibbonInputError) as err:
            extract_tree(api, SHAPE, **kwargs)
        assert "\n" not in str(err.value)
    label_only = Oracle(SklearnModel(tree, SHAPE), output="label")
    nan_answers = lambda x: torch.full((x.shape[0], 2), float("nan"))  # noqa: E731
    for oracle in (label_only, nan_answers):
        with pytest.raises(GibbonInputError):
            extract_tree(oracle, SHAPE)
    with pytest.raises(GibbonInputError):
        leaf_identity_oracle(tree, (1, 4, 4))
