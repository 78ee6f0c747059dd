"""Decision-tree extraction by path finding (Tramèr, Zhang, Juels, Reiter & Ristenpart 2016,
"Stealing Machine Learning Models via Prediction APIs", USENIX Security, arXiv:1609.02943,
section 4.2), target ``tramer2016-path-finding``: scikit-learn trees stolen from a leaf-identity API.
"""

from __future__ import annotations

import time

import numpy as np
import torch

TOL = 1e-6
N_RANDOM = 10_000  # uniform points in the feature box for the fidelity off the data


def _digits():
    from gibbon import data

    train, test = data.load("digits", "train"), data.load("digits", "test")
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    return "digits 8x8 (d = 64)", (1, 8, 8), flat(train.x).numpy(), train.y.numpy(), test.x


def _breast_cancer(seed: int):
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
    low, high = x_train.min(0), x_train.max(0)
    scale = lambda a: np.clip((a - low) / (high - low), 0.0, 1.0)  # noqa: E731 - min-max from the training split
    return ("UCI breast cancer Wisconsin (diagnostic, d = 30)", (30,), scale(x_train), y_train,
            torch.tensor(scale(x_test), dtype=torch.float32))


def _steal(name, shape, x_train, y_train, x_test, max_depth, seed):
    """Fit the victim, extract it through a counting leaf-identity oracle, measure the copy."""
    from sklearn.tree import DecisionTreeClassifier

    from gibbon.extraction.equation_solving import fidelity
    from gibbon.extraction.path_finding import extract_tree, leaf_identity_oracle
    from gibbon.oracles import Oracle, SklearnModel
    from gibbon.reproductions._common import _row

    tree = DecisionTreeClassifier(max_depth=max_depth, random_state=seed).fit(x_train, y_train)
    api = Oracle(leaf_identity_oracle(tree, shape))
    started = time.perf_counter()
    result = extract_tree(api, shape, tol=TOL)
    seconds = time.perf_counter() - started
    victim = SklearnModel(tree, shape)
    box = torch.rand((N_RANDOM, *shape), generator=torch.Generator().manual_seed(seed))
    on_test, on_box = fidelity(result.model, victim, x_test), fidelity(result.model, victim, box)
    true_leaves = int(tree.get_n_leaves())
    splits = [(int(j), t) for j, t in zip(tree.tree_.feature, tree.tree_.threshold) if j >= 0]
    located = sum(any(t - TOL < a <= t for a in result.thresholds.get(j, ())) for j, t in splits)
    what = f"{name}, max_depth {max_depth}"
    return [_row(f"{what}: leaves found (true {true_leaves})", "all", result.leaves, f"= {true_leaves}",
                 result.leaves == true_leaves and result.complete),
            _row(f"{what}: split thresholds located within tol (of {len(splits)})", "all", located,
                 f"= {len(splits)}", located == len(splits)),
            _row(f"{what}: queries (counted by the oracle; tol {TOL:g})", "-", api.total, "= reported",
                 api.total == result.queries),
            _row(f"{what}: fidelity on the {len(x_test)} test inputs", "100%", on_test, "= 100%", on_test == 1.0),
            _row(f"{what}: fidelity on {N_RANDOM} uniform points of [0, 1]^d", "100%", on_box, ">= 99.9%",
                 on_box >= 0.999),
            _row(f"{what}: extraction seconds", "-", seconds, "record", True)]


def tramer2016_path_finding(seed=0, device="cpu") -> list:
    """Tramèr et al. 2016 (arXiv:1609.02943), section 4.2: a decision tree behind an API whose
    answers identify the leaf reached is extracted exactly by path finding (paper: 100% fidelity).

    Setting: scikit-learn 1.9.1 ``DecisionTreeClassifier(random_state=seed)`` victims behind a
    query-counting :func:`~gibbon.extraction.path_finding.leaf_identity_oracle` (answers
    ``[leaf id, label]``); search box ``[0, 1]^d``, thresholds to ``tol = 1e-6``. Victims: gibbon's
    digits 8x8 (train split) at max_depth 8 and unbounded, and the UCI breast cancer Wisconsin
    (diagnostic) data (scikit-learn's copy, 70/30 stratified split, min-max scaled to [0, 1] on
    the training split) at max_depth 4 and unbounded. (Tramèr et al. stole trees trained on other
    data sets, BigML models; these victims are ours.)

    Measured (seed 0, one CPU thread): digits depth 8: 81 of 81 leaves, 19,725 queries;
    unbounded: 129 of 129 leaves, 34,508 queries; breast cancer depth 4: 12 of 12 leaves,
    1,358 queries; unbounded: 16 of 16 leaves, 1,974 queries. Fidelity 100% on every test split
    (300 digits, 171 breast cancer) and on 10,000 uniform points of the box; every split
    threshold of every victim located within 1e-6. Each extraction takes
    under 0.5 s; the whole target a few seconds. ``device`` is unused (trees run on the CPU).
    """
    del device  # scikit-learn trees run on the CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rows = []
        digits = _digits()
        for max_depth in (8, None):
            rows += _steal(*digits, max_depth, seed)
        cancer = _breast_cancer(seed)
        for max_depth in (4, None):
            rows += _steal(*cancer, max_depth, seed)
    finally:
        torch.set_num_threads(threads)
    return rows


def targets() -> list:
    from gibbon.reproductions._common import Target

    return [Target("tramer2016-path-finding", "Tramèr et al. 2016", "a decision tree behind a leaf-identity API "
                   "is extracted exactly (100% fidelity) by path finding", tramer2016_path_finding)]
