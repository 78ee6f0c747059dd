"""Path-finding extraction of an axis-aligned decision tree from a leaf-identity prediction API.

Tramèr, Zhang, Juels, Reiter & Ristenpart 2016, "Stealing Machine Learning Models via Prediction
APIs" (USENIX Security, arXiv:1609.02943), Section 4.2. Threat model: every answer identifies the
leaf the input reached (the paper's *leaf-identity oracle*; BigML's answers do, through the
confidence values that differ from leaf to leaf) and gives that leaf's class.

Why it works. A leaf of a tree with ``x_j <= t`` splits is a box, so along any axis-parallel line
each leaf is one interval and never comes back. Between two points of a line with the same leaf
the whole segment is that leaf; between two with different leaves, bisection finds every change
of leaf (every threshold crossing the line) to precision ``tol``. The attack keeps a queue of
leaves, each with a point known to reach it; for every leaf and feature it searches the whole line
through that point over ``[low, high]`` and queues each new leaf seen on the way. Every reachable
leaf is found: by induction on subtrees, if one leaf below a node split on ``(j, t)`` is explored,
the line along ``j`` through its point stays inside the node's box and crosses ``t``, so it reaches
the other child too. The leaf's box is, on each feature, the interval of the line through its point
that holds it. The extracted model answers the label of the box containing ``x``.

The answers are opaque identifiers: the attack compares whole rows (their bytes), so an oracle that
answers a probability vector distinct per leaf works as well as one answering leaf numbers. Two
leaves that answer identical rows (pure leaves of one class answering one-hot probabilities, or a
label-only API) break the attack's premise: use an API that tells leaves apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.oracles.base import UNLIMITED, QueryBudgetExceeded, as_oracle

LABEL_RULES = ("last", "argmax")
QUERY_CHUNK = 8192  # rows per oracle call (one bisection level of many lines is split into such calls)


def leaf_identity_oracle(estimator, input_shape):
    """A callable ``x (B, *input_shape) -> float64 (B, 2)`` answering rows ``[leaf id, class label]``.

    The leaf id is ``estimator.apply`` (the node index of the leaf reached), the label the
    estimator's prediction at that leaf. Wrap it in :class:`~gibbon.oracles.Oracle` to count
    queries; :func:`extract_tree` reads the label from the last column (``label_of="last"``).

    Example:
        >>> from sklearn.tree import DecisionTreeClassifier
        >>> tree = DecisionTreeClassifier(max_depth=1).fit([[0.0], [1.0]], [0, 1])
        >>> leaf_identity_oracle(tree, (1,))(torch.tensor([[0.1], [0.9]])).tolist()
        [[1.0, 0.0], [2.0, 1.0]]
    """
    if not hasattr(estimator, "apply") or not hasattr(estimator, "tree_"):
        raise GibbonInputError(f"leaf_identity_oracle needs a fitted scikit-learn decision tree, got "
                               f"{type(estimator).__name__}; fit a DecisionTreeClassifier first")
    shape = tuple(int(s) for s in input_shape)
    d = math.prod(shape)
    if getattr(estimator, "n_features_in_", d) != d:
        raise GibbonInputError(f"the tree takes {estimator.n_features_in_} features, but input_shape {shape} has {d}")
    classes = np.asarray(estimator.classes_, dtype=np.float64)
    leaf_label = classes[estimator.tree_.value[:, 0, :].argmax(axis=1)]  # predict()'s rule, per node

    def answer(x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().cpu().double().reshape(x.shape[0], d).numpy()
        leaves = estimator.apply(flat) if len(flat) else np.zeros(0, dtype=np.int64)
        rows = np.stack([leaves.astype(np.float64), leaf_label[leaves]], axis=1)
        return torch.from_numpy(rows).to(x.device)

    return answer


class ExtractedTree:
    """The stolen model: axis-aligned boxes ``lo < x <= hi`` (per feature) with a class each.

    ``x (B, *input_shape) -> (B, num_classes)`` one-hot scores (so :func:`fidelity` works);
    :meth:`predict` gives labels. A point in no box (thresholds known only to ``tol`` or an
    incomplete extraction) takes the box it violates least (summed distance outside).
    """

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, labels: torch.Tensor, num_classes: int):
        self.lo, self.hi, self.labels, self.num_classes = lo, hi, labels, int(num_classes)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().cpu().double().reshape(x.shape[0], -1)
        batch_size = max(1, 2_000_000 // max(self.lo.numel(), 1))  # keeps the (B, L, d) comparisons small
        out = []
        for chunk in flat.split(batch_size):
            below, above = self.lo.unsqueeze(0) - chunk.unsqueeze(1), chunk.unsqueeze(1) - self.hi.unsqueeze(0)
            inside = ((below < 0) & (above <= 0)).all(dim=2)  # (B, L)
            # distance outside each box; a box's own boundary point (x == lo) belongs to the box below
            outside = (below.clamp(min=0) + above.clamp(min=0)).nan_to_num(posinf=1e300).sum(dim=2)
            outside = torch.where(inside, torch.full_like(outside, -1.0), outside)
            out.append(self.labels[outside.argmin(dim=1)])
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        labels = self.predict(x)
        scores = torch.zeros(len(labels), self.num_classes, dtype=x.dtype if x.is_floating_point() else torch.float32)
        scores[torch.arange(len(labels)), labels] = 1.0
        return scores.to(x.device)


@dataclass(frozen=True)
class TreeExtractionResult:
    """A decision tree recovered by path finding.

    Attributes:
        leaves: distinct leaves found.
        queries: oracle queries spent (rows sent; repeated points are asked once).
        complete: every line was searched to the end (False: ``max_queries`` or the oracle's
            budget stopped the attack; ``model`` is then a best-effort approximation).
        thresholds: per feature, the sorted thresholds found (each the largest queried value still
            on the ``<=`` side, so within ``tol`` below the true one). Features never split on are absent.
        lines: axis-parallel lines searched (a line shared by several leaves counts once).
        model: :class:`ExtractedTree`, the boxes with their labels.
    """

    leaves: int
    queries: int
    complete: bool
    thresholds: dict
    lines: int
    model: ExtractedTree

    def to_dict(self) -> dict:
        return {"leaves": self.leaves, "queries": self.queries, "complete": self.complete, "lines": self.lines,
                "thresholds": {str(j): list(t) for j, t in self.thresholds.items()}}


class _Line:
    """The axis-parallel line ``{base with feature j set to t}``: what is known of its leaves."""

    def __init__(self, base: np.ndarray, feature: int):
        self.base, self.feature = base, feature
        self.leaf_at: dict[float, int] = {}  # queried t -> leaf index
        self.open: list[tuple[float, float]] = []  # (a, b): different leaves, b - a > tol
        self.boundaries: list[tuple[float, float]] = []  # (a, b): different leaves, b - a <= tol
        self.started = False  # its two ends asked

    def point(self, t: float) -> np.ndarray:
        p = self.base.copy()
        p[self.feature] = t
        return p


def _line_key(point: np.ndarray, feature: int) -> bytes:
    base = point.copy()
    base[feature] = 0.0
    return feature.to_bytes(4, "little") + base.tobytes()


def _labels_of(rows: torch.Tensor, label_of) -> np.ndarray:
    if callable(label_of):
        return np.asarray(torch.as_tensor(label_of(rows)).reshape(-1).cpu().long().numpy())
    column = rows[:, -1] if label_of == "last" else rows.argmax(dim=1)
    return column.round().long().cpu().numpy()


def _checked_rows(answer, n: int) -> torch.Tensor:
    if not isinstance(answer, torch.Tensor) or answer.ndim != 2 or answer.shape[0] != n:
        shape = tuple(answer.shape) if isinstance(answer, torch.Tensor) else type(answer).__name__
        raise GibbonInputError(f"path finding needs one row identifying the leaf per query ((B, m) answers, e.g. "
                               f"leaf_identity_oracle's [leaf id, label]), got {shape} for {n} queries; a label-only "
                               "oracle cannot tell leaves of one class apart")
    rows = answer.detach().cpu().double()
    if not bool(torch.isfinite(rows).all()):
        raise GibbonInputError("the oracle answered non-finite values (NaN or inf); path finding needs rows that "
                               "identify the leaf, e.g. leaf_identity_oracle(estimator, input_shape)")
    return rows


def _bounds(bounds) -> tuple[float, float]:
    try:
        low, high = float(bounds[0]), float(bounds[1])
    except (TypeError, ValueError, IndexError):
        raise GibbonInputError(f"bounds must be (low, high) numbers, got {bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise GibbonInputError(f"bounds must be finite (low, high) with high > low, got {bounds!r}")
    return low, high


def _interval(line: _Line, t: float) -> tuple[float, float]:
    """The ``(lo, hi]`` of the leaf holding ``t`` on ``line``: the nearest boundaries either side
    (an unresolved open interval counts as a boundary at its lower end); infinite past the last."""
    if not line.started:
        return -math.inf, math.inf
    lo, hi = -math.inf, math.inf
    for a, b in line.boundaries + line.open:
        if b <= t:
            lo = max(lo, a)
        elif a >= t:
            hi = min(hi, a)
    return lo, hi


def extract_tree(oracle, input_shape, *, bounds=(0.0, 1.0), tol: float = 1e-6, max_queries: int | None = None,
                 label_of="last", num_classes: int | None = None, start=None) -> TreeExtractionResult:
    """Steal an axis-aligned decision tree by path finding (Tramèr et al. 2016, arXiv:1609.02943, §4.2).

    Every leaf is explored along every feature: the line through its known point is bisected
    between points reaching different leaves until the change is located within ``tol``. Lines of
    one bisection level are asked together (in calls of up to 8192 rows), each distinct point once.
    Queries per leaf and feature: 2 (the line's ends) plus about ``log2((high - low) / tol)`` per
    threshold crossing the line; a line shared by several leaves (a leaf found on it) is searched once.

    Measured (scikit-learn 1.9.1 DecisionTreeClassifier, leaf-identity oracle, tol 1e-6, one CPU
    thread; see :func:`gibbon.reproductions.tree_extraction.tramer2016_path_finding`):
    digits 8x8 (d = 64) at max_depth 8: all 81 leaves, 19,725 queries; unbounded: all 129 leaves,
    34,508 queries (under 0.4 s each); UCI breast cancer (d = 30, min-max scaled) at max_depth 4:
    12 of 12 leaves, 1,358 queries; unbounded 16 of 16, 1,974 queries. Fidelity 100% on the test
    splits and on 10,000 uniform points of ``[0, 1]^d``, every split threshold within ``tol``.
    Probability rows as identifiers (the victim's own log ``predict_proba``, digits, max_depth 6,
    min_samples_leaf 10, whose 27 leaves have distinct distributions; ``label_of="argmax"``):
    27 of 27 leaves, 5,548 queries, fidelity 100%.

    A level (or one call of it) that the budget cannot pay for is not asked: the attack stops
    with ``complete=False`` and a model built from what it learnt, every found leaf's box
    bounded only on the features whose lines were searched.

    Args:
        oracle: :class:`~gibbon.oracles.Oracle` (or any callable, wrapped and counted) answering
            one row per input that identifies the leaf, e.g. ``Oracle(leaf_identity_oracle(tree, shape))``,
            or per-leaf-distinct probability rows with ``label_of="argmax"``.
        input_shape: shape of one input, e.g. ``(1, 8, 8)``; features are its flattened entries.
        bounds: ``(low, high)``, the box searched on every feature.
        tol: precision of each threshold (> 0).
        max_queries: budget for this call (None: only the oracle's own shared budget); when it
            runs out the attack stops cleanly with ``complete=False``.
        label_of: how an answer row gives the leaf's class: ``"last"`` (last column, as
            :func:`leaf_identity_oracle` answers), ``"argmax"`` (probability rows) or a callable
            ``rows (B, m) -> labels (B,)``.
        num_classes: columns of the extracted model's one-hot scores (default: largest label + 1).
        start: the first point (default: the middle of the box).

    Returns:
        :class:`TreeExtractionResult`; ``queries`` equals what the oracle counted for this call.

    Example:
        >>> from sklearn.tree import DecisionTreeClassifier
        >>> tree = DecisionTreeClassifier(random_state=0).fit([[0.1, 0.2], [0.8, 0.3], [0.5, 0.9]], [0, 1, 2])
        >>> result = extract_tree(leaf_identity_oracle(tree, (2,)), (2,))
        >>> result.leaves, result.complete, int(tree.get_n_leaves())
        (3, True, 3)
    """
    shape = tuple(int(s) for s in input_shape)
    d = math.prod(shape)
    if d < 1:
        raise GibbonInputError(f"input_shape must have at least one feature, got {input_shape!r}")
    low, high = _bounds(bounds)
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise GibbonInputError(f"tol must be a number > 0 (the threshold precision), got {tol!r}; e.g. tol=1e-6")
    whole = isinstance(max_queries, (int, np.integer)) and not isinstance(max_queries, bool)
    if max_queries is not None and not (whole and max_queries >= 0):
        raise GibbonInputError(f"max_queries must be a whole number >= 0 or None, got {max_queries!r}")
    if not (callable(label_of) or label_of in LABEL_RULES):
        raise GibbonInputError(f"label_of must be one of {', '.join(LABEL_RULES)} or a callable, got {label_of!r}")
    first = np.full(d, (low + high) / 2) if start is None else np.asarray(start, dtype=np.float64).reshape(-1)
    if first.shape != (d,) or not bool(((first >= low) & (first <= high)).all()):
        raise GibbonInputError(f"start must be one point of {d} features inside bounds {bounds!r}")
    oracle = as_oracle(oracle)
    spent, stopped = 0, False
    leaf_of: dict[bytes, int] = {}  # answer row bytes -> leaf index
    leaf_points: list[np.ndarray] = []
    leaf_labels: list[int] = []
    leaf_lines: list[list] = []  # per leaf, its d lines
    lines: dict[bytes, _Line] = {}
    fresh: list[_Line] = []  # lines whose ends are still to be asked

    def left() -> int:
        own = UNLIMITED if max_queries is None else int(max_queries) - spent
        return max(min(own, oracle.total_remaining()), 0)

    def ask(points: list[np.ndarray]) -> list[int] | None:
        """Leaf indices for ``points`` (new leaves registered), or None when the budget ends first."""
        nonlocal spent, stopped
        answers = []
        for i in range(0, len(points), QUERY_CHUNK):
            chunk = points[i:i + QUERY_CHUNK]
            if len(chunk) > left():
                stopped = True
                return None
            x = torch.from_numpy(np.stack(chunk)).reshape(len(chunk), *shape)
            try:
                answer = oracle(x)
            except QueryBudgetExceeded:  # a budget the oracle did not report beforehand
                stopped = True
                return None
            spent += len(chunk)
            rows = _checked_rows(answer, len(chunk))
            labels = _labels_of(rows, label_of)
            for point, row, label in zip(chunk, rows.numpy(), labels):
                key = row.tobytes()
                if key not in leaf_of:
                    leaf_of[key] = len(leaf_points)
                    leaf_points.append(point)
                    leaf_labels.append(int(label))
                    leaf_lines.append(add_lines(point, leaf_of[key]))
                answers.append(leaf_of[key])
        return answers

    def add_lines(point: np.ndarray, leaf: int) -> list:
        """The ``d`` lines through a new leaf's point; new ones start knowing that point's leaf."""
        own = []
        for j in range(d):
            key = _line_key(point, j)
            if key not in lines:
                lines[key] = _Line(point, j)
                lines[key].leaf_at[float(point[j])] = leaf
                fresh.append(lines[key])
            own.append(lines[key])
        return own

    ask([first])
    while not stopped:
        # one level: the ends of new lines, and the midpoints of every open interval
        wanted = []  # (line, t)
        starting, fresh[:] = list(fresh), []
        for line in starting:
            wanted += [(line, t) for t in (low, high) if t not in line.leaf_at]
        splitting = [line for line in lines.values() if line.open]
        for line in splitting:
            wanted += [(line, (a + b) / 2) for a, b in line.open]
        if not wanted and not starting:
            break
        found = ask([line.point(t) for line, t in wanted]) if wanted else []
        if found is None:
            fresh[:0] = starting
            break
        for (line, t), leaf in zip(wanted, found):
            line.leaf_at[t] = leaf
        for line in starting:
            line.started = True
            known = sorted(line.leaf_at)
            line.open = [(a, b) for a, b in zip(known, known[1:])]
        for line in set(starting) | set(splitting):
            intervals = []
            for a, b in line.open:
                m = (a + b) / 2
                intervals += [(a, m), (m, b)] if m in line.leaf_at and a < m < b else [(a, b)]
            line.open = []
            for a, b in intervals:
                if line.leaf_at[a] == line.leaf_at[b]:
                    continue  # a segment with one leaf at both ends is all that leaf
                (line.boundaries if b - a <= tol or not a < (a + b) / 2 < b else line.open).append((a, b))
    if not leaf_points:
        raise GibbonInputError("the query budget did not allow even one query; pass max_queries >= 1")
    complete = not stopped and not fresh and not any(line.open for line in lines.values())
    lo = torch.full((len(leaf_points), d), -math.inf, dtype=torch.float64)
    hi = torch.full((len(leaf_points), d), math.inf, dtype=torch.float64)
    for i, (point, own) in enumerate(zip(leaf_points, leaf_lines)):
        for j, line in enumerate(own):
            lo[i, j], hi[i, j] = _interval(line, float(point[j]))
    thresholds: dict[int, set] = {}
    for line in lines.values():
        for a, _ in line.boundaries:
            thresholds.setdefault(line.feature, set()).add(a)
    labels = torch.tensor(leaf_labels, dtype=torch.int64)
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise GibbonInputError(f"the oracle's labels {sorted(set(leaf_labels))} are not classes 0..{k - 1}; "
                               "check label_of (\"last\" for [leaf id, label] rows, \"argmax\" for probabilities)")
    return TreeExtractionResult(leaves=len(leaf_points), queries=spent, complete=complete,
                                thresholds={j: tuple(sorted(t)) for j, t in sorted(thresholds.items())},
                                lines=len(lines), model=ExtractedTree(lo, hi, labels, k))
