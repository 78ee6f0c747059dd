"""scikit-learn classifiers as black-box models: train, score, save and load without pickle.

Threat model: black-box only. A scikit-learn estimator has no input gradient, so it is attacked
with score-based or decision-based attacks (Square, one-pixel, ...) through an
:class:`~gibbon.oracles.Oracle`, which counts every query and refuses gradients.

:class:`SklearnModel` makes a fitted estimator answer like a gibbon model: a float tensor
``(B, C, H, W)`` in, a float tensor of scores ``(B, K)`` out (one column per class of the data
set, in label order). The scores are chosen per estimator, in this order:

* ``"log_proba"``: ``log(predict_proba)``, probabilities floored at :data:`PROBA_FLOOR` first
  (trees, forests and k-NN give exact zeros). Log-probabilities are logits up to a per-row
  constant, so the margin loss of score-based attacks sees the same numbers as on a torch
  model's logits, ``softmax(scores)`` gives the probabilities back (what
  :func:`~gibbon.oracles.to_probabilities` does), and the evaluation's sanity check for
  "probabilities instead of logits" stays quiet.
* ``"decision_function"``: the estimator's decision values (``LinearSVC``, ``SVC``); a binary
  estimator's single column ``d`` becomes ``[-d/2, d/2]``.
* ``"one_hot"``: the one-hot of ``predict`` (an estimator with neither): labels only.

Techniques (:data:`TECHNIQUES`) and their defaults are scikit-learn's own, plus
``random_state=seed`` where the estimator takes one. ``svm-linear`` is ``LinearSVC`` (liblinear,
one-vs-rest): it trains on all of MNIST in seconds, where ``SVC(kernel="linear",
probability=True)`` would cost a quadratic kernel solve plus a 5-fold Platt calibration; its
scores are decision values. ``svm-rbf`` and ``knn`` are slow to train or to query on large
data: they default to a random subset of :data:`SLOW_N_TRAIN` (10,000) training samples (on
MNIST; digits has fewer, so all are used), recorded in the card.

Files: :func:`save_sklearn` writes ``PATH.skops`` (:mod:`skops.io`, no pickle, no joblib) and a
JSON card ``PATH.json`` beside it. :func:`load_sklearn` opens only files whose every type is one
gibbon itself writes (:data:`TRUSTED_TYPES`), checked on the file's schema *before* anything is
built, and then hands exactly those types to ``skops.io.load(trusted=...)``; any other type is
refused with :class:`UntrustedFileError`.
"""

from __future__ import annotations

import json
import platform
import zipfile
from pathlib import Path

import numpy as np
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.oracles.base import GradientRefusedError
from gibbon.zoo.io import _atomic_write

CARD_FORMAT = "gibbon-sklearn-card/1"
PROBA_FLOOR = 1e-12  # log(0) would be -inf: probabilities are floored here before the log
SLOW_N_TRAIN = 10_000
SLOW_TECHNIQUES = ("svm-rbf", "knn")

TECHNIQUES: dict[str, str] = {
    "lr": "multinomial logistic regression (LogisticRegression, lbfgs, max_iter=1000); scores: log-probabilities",
    "svm-linear": "linear SVM, one-vs-rest (LinearSVC); scores: decision values",
    "svm-rbf": "RBF-kernel SVM (SVC); scores: decision values; default 10k training subset",
    "tree": "decision tree (DecisionTreeClassifier); scores: log-probabilities",
    "forest": "random forest, 100 trees (RandomForestClassifier); scores: log-probabilities",
    "boosting": "histogram gradient boosting (HistGradientBoostingClassifier); scores: log-probabilities",
    "knn": "k nearest neighbours, k=5 (KNeighborsClassifier); scores: log-probabilities; default 10k training subset",
}


class UntrustedFileError(GibbonInputError):
    """A ``.skops`` file holds types gibbon never writes: it is not loaded."""


def _classes() -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC, LinearSVC
    from sklearn.tree import DecisionTreeClassifier

    return {"lr": LogisticRegression, "svm-linear": LinearSVC, "svm-rbf": SVC, "tree": DecisionTreeClassifier,
            "forest": RandomForestClassifier, "boosting": HistGradientBoostingClassifier, "knn": KNeighborsClassifier}


def _defaults(name: str, seed: int) -> dict:
    return {"lr": {"max_iter": 1000, "random_state": seed}, "svm-linear": {"random_state": seed},
            "svm-rbf": {"kernel": "rbf", "random_state": seed}, "tree": {"random_state": seed},
            "forest": {"n_estimators": 100, "random_state": seed}, "boosting": {"random_state": seed},
            "knn": {"n_neighbors": 5}}[name]


def _qualname(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# The internals the techniques' estimators hold, as skops names them (scikit-learn 1.3 - 1.9).
# save_sklearn re-reads every file it writes and fails at once if this list falls behind.
_INTERNALS = (
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.preprocessing._label.LabelEncoder",
    "sklearn._loss.loss.HalfMultinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.Interval",
    "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",
)
_PLAIN = (
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int", "builtins.float",
    "builtins.bool", "numpy.ndarray", "numpy.dtype", "numpy.random._generator.Generator",
    *(f"numpy.{t}" for t in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                             "uint32", "uint64", "bool_", "bool")),
)


def trusted_types() -> frozenset[str]:
    """Every type (``module.Class``) a file written by :func:`save_sklearn` may hold."""
    return frozenset(_PLAIN) | frozenset(_INTERNALS) | frozenset(_qualname(c) for c in _classes().values())


TRUSTED_TYPES = trusted_types()


def _file_types(path: Path) -> set[str]:
    """All ``module.Class`` names in a skops file's schema (read as JSON; nothing is built)."""
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise GibbonInputError(f"{path} is not a skops file ({e}); save models with gibbon.oracles.save_sklearn") from None
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "__class__" in node or "__module__" in node:
                found.add(f"{node.get('__module__')}.{node.get('__class__')}")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def check_trusted(path) -> list[str]:
    """Refuse a skops file holding any type outside :data:`TRUSTED_TYPES`; return the types skops
    itself does not trust by default (all of them gibbon's), to pass as ``trusted=``.

    Raises:
        UntrustedFileError: the file holds other types (the message lists them).
    """
    import skops.io as sio

    path = Path(path)
    unknown = _file_types(path) - TRUSTED_TYPES
    untrusted = sio.get_untrusted_types(file=path)
    unknown |= set(untrusted) - TRUSTED_TYPES
    if unknown:
        raise UntrustedFileError(
            f"refusing to load {path}: it holds types gibbon never writes ({', '.join(sorted(unknown))}); gibbon "
            "loads only the estimators it saves itself. If you trust the file, load it yourself with "
            "skops.io.load(path, trusted=[...])")
    return sorted(untrusted)


class SklearnModel:
    """A fitted scikit-learn classifier answering like a model: ``x (B, C, H, W) -> scores (B, K)``.

    Args:
        estimator: a fitted classifier (``predict_proba``, else ``decision_function``, else
            ``predict`` is used; see the module docstring) trained on inputs flattened to
            ``C * H * W`` features and integer labels in ``range(K)``.
        input_shape: ``(C, H, W)`` of one input.
        classes: class names (``K = len(classes)``); default ``estimator.classes_``.
        bounds: valid input range (for the card and attacks; inputs are not checked against it).
        card: the model card (see :func:`train_technique`).

    Shape:
        ``x``: ``(B, *input_shape)`` floating point, any device; returns ``(B, K)`` scores in
        ``x``'s dtype and device. An input that requires grad is refused (no gradients exist).

    Example:
        >>> from sklearn.linear_model import LogisticRegression
        >>> x, y = torch.rand(20, 1, 2, 2), torch.arange(20) % 2
        >>> model = SklearnModel(LogisticRegression().fit(x.reshape(20, -1).numpy(), y.numpy()), (1, 2, 2))
        >>> model.scores, model(x).shape
        ('log_proba', torch.Size([20, 2]))
    """

    def __init__(self, estimator, input_shape, *, classes=None, bounds=(0.0, 1.0), card: dict | None = None):
        labels = getattr(estimator, "classes_", None)
        if labels is None:
            raise GibbonInputError(f"{type(estimator).__name__} is not fitted (no classes_); fit it first")
        self.estimator, self.input_shape = estimator, tuple(int(d) for d in input_shape)
        self.classes = tuple(str(c) for c in (labels if classes is None else classes))
        self.bounds = (float(bounds[0]), float(bounds[1]))
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= len(self.classes):
            raise GibbonInputError(f"the estimator's classes_ must be labels 0..{len(self.classes) - 1}, got {labels}")
        self.columns = labels.astype(np.int64)
        n_features = getattr(estimator, "n_features_in_", None)
        if n_features is not None and n_features != int(np.prod(self.input_shape)):
            raise GibbonInputError(f"the estimator takes {n_features} features, but input_shape {self.input_shape} "
                                   f"has {int(np.prod(self.input_shape))}")
        self.scores = ("log_proba" if hasattr(estimator, "predict_proba") else
                       "decision_function" if hasattr(estimator, "decision_function") else "one_hot")
        self.card = dict(card or {})

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def gibbon_card(self) -> dict:
        return self.card

    def _check(self, x) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise GibbonInputError(f"inputs must be a floating-point tensor (B, {', '.join(map(str, self.input_shape))}), "
                                   f"got {getattr(x, 'dtype', type(x).__name__)}; convert with x.float()")
        if tuple(x.shape[1:]) != self.input_shape or x.ndim != len(self.input_shape) + 1:
            raise GibbonInputError(f"this model takes inputs of shape (B, {', '.join(map(str, self.input_shape))}), "
                                   f"got {tuple(x.shape)}; pick the dataset it was trained on")
        if x.requires_grad:
            raise GradientRefusedError("a scikit-learn model has no input gradients; use a black-box attack "
                                       "(square, one-pixel) and query with x.detach()")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        flat = x.detach().to("cpu", torch.float32).reshape(x.shape[0], int(np.prod(self.input_shape))).numpy()
        out = np.full((x.shape[0], self.num_classes), np.log(PROBA_FLOOR))
        if x.shape[0] == 0:
            pass
        elif self.scores == "log_proba":
            out[:, self.columns] = np.log(np.clip(self.estimator.predict_proba(flat), PROBA_FLOOR, None))
        elif self.scores == "decision_function":
            d = np.asarray(self.estimator.decision_function(flat), dtype=np.float64)
            d = np.stack([-d / 2, d / 2], axis=1) if d.ndim == 1 else d
            out[:] = d.min(axis=1, keepdims=True) - 1  # classes the estimator never saw rank last
            out[:, self.columns] = d
        else:
            out[:] = 0.0
            out[np.arange(len(flat)), self.columns[np.searchsorted(self.estimator.classes_, self.estimator.predict(flat))]] = 1.0
        return torch.from_numpy(out).to(device=x.device, dtype=x.dtype)

    def __repr__(self) -> str:
        return (f"SklearnModel({type(self.estimator).__name__}, input_shape={self.input_shape}, "
                f"classes={self.num_classes}, scores={self.scores!r})")


def versions() -> dict:
    import sklearn
    import skops

    from gibbon.zoo.io import gibbon_version

    return {"gibbon": gibbon_version(), "sklearn": sklearn.__version__, "skops": skops.__version__,
            "numpy": np.__version__, "torch": torch.__version__, "python": platform.python_version()}


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def accuracy(model, dataset, batch_size: int = 2000) -> float:
    """Top-1 accuracy of ``model`` (any ``x -> scores`` callable) on a Dataset."""
    right = 0
    for start in range(0, len(dataset), batch_size):
        scores = model(dataset.x[start:start + batch_size])
        right += int((scores.argmax(dim=1) == dataset.y[start:start + batch_size]).sum())
    return right / max(len(dataset), 1)


def train_technique(name: str, dataset, *, seed: int = 0, n_train: int | None = None, test=None,
                    **params) -> SklearnModel:
    """Train scikit-learn technique ``name`` on ``dataset`` and wrap it as a :class:`SklearnModel`.

    Args:
        name: one of :data:`TECHNIQUES` (``lr``, ``svm-linear``, ``svm-rbf``, ``tree``, ``forest``,
            ``boosting``, ``knn``).
        dataset: a training :class:`~gibbon.data.Dataset`, or a data set name (its ``train`` split).
        seed: ``random_state`` of the estimator and seed of the training subset.
        n_train: train on a random subset of this many samples (drawn with ``seed``, kept in
            order). None: all samples, except for ``svm-rbf`` and ``knn``, which default to
            :data:`SLOW_N_TRAIN` = 10,000 (this matters on MNIST's 50,000; digits has 1,197).
        test: the Dataset scored for the card's ``clean_test_accuracy``; None loads the ``test``
            split of ``dataset.name``.
        **params: estimator parameters overriding gibbon's defaults (e.g. ``C=10``, ``max_iter=50``).

    Returns:
        The model, its card filled: ``technique``, ``estimator``, ``params`` (all the estimator's
        parameters), ``dataset``, ``input_shape``, ``classes``, ``num_classes``, ``bounds``,
        ``n_train``, ``train_subset`` (None or ``{"n", "of", "seed"}``), ``clean_test_accuracy``,
        ``test_n``, ``seed``, ``scores`` and ``versions``.

    Example:
        >>> from gibbon import data
        >>> model = train_technique("tree", data.load("digits", "train", n=300), seed=0, max_depth=4)
        >>> model.card["technique"], model.card["n_train"], model.num_classes
        ('tree', 300, 10)
    """
    from gibbon import data as gdata

    if name not in TECHNIQUES:
        raise GibbonInputError(f"unknown technique {name!r}; choose one of {', '.join(TECHNIQUES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GibbonInputError(f"seed must be an integer >= 0, got {seed!r}")
    train = gdata.load(dataset, "train") if isinstance(dataset, str) else dataset
    if n_train is None and name in SLOW_TECHNIQUES and len(train) > SLOW_N_TRAIN:
        n_train = SLOW_N_TRAIN
    from gibbon.data.subset import pick_rows

    rows = pick_rows(len(train), n_train, seed)
    x, y = (train.x, train.y) if rows is None else (train.x[torch.from_numpy(rows)], train.y[torch.from_numpy(rows)])
    cls = _classes()[name]
    kwargs = {**_defaults(name, seed), **params}
    try:
        estimator = cls(**kwargs)
    except TypeError:
        valid = ", ".join(sorted(cls().get_params()))
        raise GibbonInputError(f"{name} ({cls.__name__}) takes no parameter(s) {sorted(set(params) - set(cls().get_params()))}; "
                               f"its parameters are: {valid}") from None
    try:
        estimator.fit(x.reshape(len(x), -1).numpy(), y.numpy())
    except ValueError as e:  # scikit-learn's parameter validation
        raise GibbonInputError(f"cannot train {name} with {params}: {e}") from None
    model = SklearnModel(estimator, train.input_shape, classes=train.classes, bounds=train.bounds)
    test = gdata.load(train.name, "test") if test is None else test
    model.card = {
        "format": CARD_FORMAT, "technique": name, "estimator": _qualname(cls),
        "params": _jsonable(estimator.get_params()), "dataset": train.name,
        "input_shape": list(train.input_shape), "classes": list(train.classes), "num_classes": len(train.classes),
        "bounds": list(model.bounds), "n_train": len(x),
        "train_subset": None if rows is None else {"n": len(rows), "of": len(train), "seed": seed},
        "clean_test_accuracy": accuracy(model, test), "test_n": len(test), "seed": seed, "scores": model.scores,
        "versions": versions(),
    }
    return model


def save_sklearn(model: SklearnModel, path) -> Path:
    """Write ``model`` to ``path`` (``.skops``, via :func:`skops.io.dump`) and its card to ``path`` with ``.json``.

    The written file is read back through :func:`check_trusted` (gibbon must be able to load what
    it writes). Returns ``path``.
    """
    import skops.io as sio

    if not isinstance(model, SklearnModel):
        raise GibbonInputError(f"save_sklearn takes a SklearnModel, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".skops":
        raise GibbonInputError(f"a scikit-learn model is saved as PATH.skops, got {path}")
    cls = type(model.estimator)
    technique = {c: name for name, c in _classes().items()}.get(cls)
    if technique is None:
        raise GibbonInputError(f"gibbon saves only its own techniques' estimators, not {cls.__name__}")
    card = {"format": CARD_FORMAT, **model.card, "technique": technique, "estimator": _qualname(cls),
            "input_shape": list(model.input_shape),
            "classes": list(model.classes), "num_classes": model.num_classes, "bounds": list(model.bounds),
            "scores": model.scores, "versions": versions(), "file": path.name}
    text = json.dumps(_jsonable(card), indent=2, sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)

    def dump(tmp: Path) -> None:
        sio.dump(model.estimator, tmp)
        try:
            check_trusted(tmp)
        except UntrustedFileError as e:
            raise RuntimeError(f"gibbon wrote a file it would refuse to load; TRUSTED_TYPES is out of date "
                               f"for this scikit-learn ({e})") from None

    _atomic_write(path, dump)
    _atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(text + "\n"))
    return path


def load_sklearn(path) -> SklearnModel:
    """Load a model written by :func:`save_sklearn` (``path``: the ``.skops`` file or its ``.json`` card).

    Raises:
        UntrustedFileError: the file holds a type gibbon never writes (nothing of it is built).
        GibbonInputError: no such file, no card, or a card that does not match the estimator.
    """
    import skops.io as sio

    path = Path(path)
    path = path.with_suffix(".skops") if path.suffix == ".json" else path
    if not path.is_file():
        raise GibbonInputError(f"no scikit-learn model at {path}; train one with `gibbon train --technique lr ...`")
    cpath = path.with_suffix(".json")
    try:
        card = json.loads(cpath.read_text())
    except (OSError, ValueError) as e:
        raise GibbonInputError(f"cannot read the model card {cpath} ({e}); save_sklearn writes it beside the model") from None
    if not isinstance(card, dict) or card.get("technique") not in TECHNIQUES or not card.get("input_shape"):
        raise GibbonInputError(f"model card {cpath} must name a technique ({', '.join(TECHNIQUES)}) and input_shape")
    try:
        estimator = sio.load(path, trusted=check_trusted(path))
    except GibbonInputError:  # UntrustedFileError included: the refusal names the foreign types
        raise
    except Exception as e:  # noqa: BLE001 - a damaged archive fails in skops with any error type
        raise GibbonInputError(f"cannot read {path} as a scikit-learn model ({type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else 'no detail'}); the file is damaged or not "
                               "written by gibbon.oracles.save_sklearn: save it again") from None
    expected = _classes()[card["technique"]]
    if type(estimator) is not expected:
        raise GibbonInputError(f"{path} holds a {type(estimator).__name__}, but its card says {card['technique']} "
                               f"({expected.__name__}); the files do not belong together")
    classes = card.get("classes") or None
    return SklearnModel(estimator, card["input_shape"], classes=classes, bounds=card.get("bounds") or (0.0, 1.0),
                        card=card)
