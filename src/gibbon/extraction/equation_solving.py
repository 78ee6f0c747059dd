"""Equation-solving extraction of (multinomial) logistic regression from a prediction API.

Tramèr, Zhang, Juels, Reiter & Ristenpart 2016, "Stealing Machine Learning Models via Prediction
APIs" (USENIX Security, arXiv:1609.02943), Section 4.1. For ``f(x) = softmax(Wx + b)`` the log-odds
of any two classes are linear in the input::

    log(p_i(x) / p_k(x)) = (w_i - w_k) . x + (b_i - b_k)

so ``d + 1`` queries with the probabilities of all ``k`` classes give, for every class ``i``, a
square linear system in the ``d + 1`` unknowns ``(w_i - w_k, b_i - b_k)``: one least-squares solve
(all classes share the same design matrix) recovers the model exactly. Only differences of rows
are identifiable (adding one vector to every row leaves the softmax unchanged), so the result is
the equivalent model whose last class's row and bias are zero. Binary logistic regression (the
zoo's ``logistic-regression``: logits ``[0, w.x + b]``) is the case ``k = 2``.

The attack uses only what the oracle answers: logits are turned into log-probabilities by
``log_softmax`` (exact), probabilities by ``log`` after clipping. A probability that underflowed
to 0 (or, rounded, shows as 0) gives no equation: such entries are left out of the solve and
counted (``saturated``). Rounded outputs make the system inexact; more queries than ``d + 1``
(a least-squares fit over more equations) defeat the rounding, as Tramèr et al. note, and the
fit's residual is reported.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.oracles.base import QueryBudgetExceeded, as_oracle

EPS = 1e-30  # probabilities at or below this are taken as underflowed: they give no equation
PLACEMENTS = ("uniform", "boundary")
BOUNDARY_ROUNDS = 5  # rounds of the boundary placement unless told
FIRST_SCALE = 0.05  # the boundary placement's first round: this fraction of the box, at its low corner
LOGIT_SPREAD = 0.5  # std (nats) of the random logits boundary queries are placed at (measured best of 0.25-2)
PLACEMENT_RIDGE = 0.03  # ridge of the fits that only place the next round (measured: 0.03-0.3 alike, 0 and 10 worse)
PROJECTION_STEPS = 20  # alternations of the minimum-norm step and the box clip


@dataclass(frozen=True)
class ExtractionResult:
    """A model recovered by equation solving.

    Attributes:
        weight: ``(k, d)`` recovered weights, last row zero (an equivalent model: same softmax).
        bias: ``(k,)`` recovered biases, last entry zero.
        queries: oracle queries spent (``d + 1`` for the exact attack).
        residual: RMS residual of the least-squares fit of the log-odds (0 up to float error
            for exact outputs; grows with rounding).
        saturated: (query, class) probabilities left out as underflowed or rounded to 0.
        underdetermined: classes with fewer than ``d + 1`` usable equations (their rows are the
            minimum-norm fit, not identified; query more, or nearer the decision boundaries).
        model: ``Flatten + Linear`` with the recovered parameters, returning logits.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    queries: int
    residual: float
    saturated: int
    underdetermined: tuple[int, ...]
    model: nn.Module

    def to_dict(self) -> dict:
        return {"num_classes": int(self.weight.shape[0]), "input_dim": int(self.weight.shape[1]),
                "queries": self.queries, "residual": self.residual, "saturated": self.saturated,
                "underdetermined": list(self.underdetermined)}


def _device_of(oracle) -> torch.device:
    """Where the model behind ``oracle`` (through Oracle views) keeps its parameters; CPU otherwise."""
    inner = oracle
    while hasattr(inner, "model") and not isinstance(inner, nn.Module):
        inner = inner.model
    if isinstance(inner, nn.Module):
        for p in inner.parameters():
            return p.device
    return torch.device("cpu")


def log_probabilities(scores: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p [B, K], usable [B, K])`` from an oracle's answer: rows that are probabilities
    (non-negative, summing to 1) are logged with entries ``<= eps`` marked unusable; other rows
    are logits, and ``log_softmax`` of logits is exact (all entries usable)."""
    if scores.ndim != 2 or not scores.is_floating_point():
        raise GibbonInputError(
            "equation-solving extraction needs scores (probabilities or logits) for every class, but this "
            "oracle returns labels only; use a learning-based extraction attack (train a substitute on "
            "the labels, e.g. gibbon.transfer.substitute_attack)")
    s = scores.double()
    # rounded probabilities may sum to 1 +- k * half a unit of the last place: accept rows in [0, 1]
    # summing to within 0.5 of 1 (logits that do so are rare, and then the scores arg. decides)
    probs = bool(((s >= 0) & (s <= 1)).all()) and bool(((s.sum(1) - 1).abs() <= 0.5).all())
    if not probs:
        return s.log_softmax(dim=1), torch.ones_like(s, dtype=torch.bool)
    usable = s > eps
    return s.clamp(min=eps).log(), usable


def _solve(a: torch.Tensor, t: torch.Tensor, ridge: float) -> torch.Tensor:
    """Least squares ``a @ theta ~ t`` (float64), ridge-penalising all but the last (bias) column."""
    if ridge > 0:
        reg = torch.eye(a.shape[1], dtype=a.dtype) * ridge
        reg[-1, -1] = 0.0
        return torch.linalg.solve(a.T @ a + reg, a.T @ t)
    return torch.linalg.lstsq(a, t, driver="gelsd").solution


def _fit_log_odds(a: torch.Tensor, logp: torch.Tensor, usable: torch.Tensor, ridge: float):
    """Weighted least squares of every class's log-odds against one reference class.

    ``a`` is ``[n, d + 1]`` (inputs and a ones column), ``logp`` / ``usable`` are ``[n, k]``.
    Returns ``(theta [k, d + 1] with the last class's row zero, squared error, equations, short)``,
    ``short`` the classes with fewer than ``d + 1`` usable equations."""
    k, d = logp.shape[1], a.shape[1] - 1
    ref = int(usable.sum(0).argmax())  # the class giving the most equations
    theta = torch.zeros(k, d + 1, dtype=torch.float64)  # rows: (w_i - w_ref, b_i - b_ref)
    sq_err, count, short = 0.0, 0, []
    for i in range(k):
        if i == ref:
            continue
        rows = usable[:, i] & usable[:, ref]
        if int(rows.sum()) < d + 1:
            short.append(i)
        if not bool(rows.any()):
            continue
        target = logp[rows, i] - logp[rows, ref]
        # an error e in p gives an error ~ e / p in log p: weight each equation by the inverse of
        # that spread, so rounded small probabilities count less (exact outputs: same solution)
        w = (logp[rows, i].neg().exp() ** 2 + logp[rows, ref].neg().exp() ** 2).rsqrt()
        w = (w / w.max()).unsqueeze(1)
        theta[i] = _solve(a[rows] * w, target.unsqueeze(1) * w, ridge).squeeze(1)
        sq_err += float(((a[rows] @ theta[i] - target) ** 2).sum())
        count += int(rows.sum())
    return theta - theta[k - 1], sq_err, count, short


def box_scales(rounds: int, first: float = FIRST_SCALE) -> list[float]:
    """Fractions of the box each boundary round starts its queries in: geometric from ``first`` to 1.

    Why grow: a model fitted on a small box is only trusted near it; each round's fit, on queries
    a little further out, is good enough to place the next round further still (measured on MNIST:
    projecting whole-box points with the first, small-box fit misplaces them all)."""
    return [first ** ((rounds - 1 - r) / (rounds - 1)) for r in range(rounds)]


def place_near_boundaries(theta: torch.Tensor, n: int, bounds, gen: torch.Generator, *, scale: float = 1.0,
                          spread: float = LOGIT_SPREAD, steps: int = PROJECTION_STEPS) -> torch.Tensor:
    """``n`` inputs ``[n, d]`` in the box where the *estimated* model ``theta`` (``[k, d + 1]``,
    rows ``(w_i, b_i)``) gives every class a comparable probability, i.e. no class saturated.

    Each starts at a uniform point of the box's ``scale`` fraction at its low corner and is moved
    to the nearest point whose estimated logits equal a random target (independent
    ``N(0, spread^2)`` per class: a spread below one nat keeps all ``k`` probabilities well above
    a rounding step while the log-odds still vary, so the equations stay well conditioned in the
    directions that matter), alternating that minimum-norm step with clipping into the box
    (projections onto convex sets; the box is respected exactly). Measured on MNIST (3925 queries,
    2 decimals): without the step (the growing boxes alone) agreement stops at 90%; with it, 99.5%.
    """
    low, high = float(bounds[0]), float(bounds[1])
    w, c = theta[:, :-1], theta[:, -1]
    k, d = w.shape
    step = torch.linalg.pinv(w).T  # [k, d]: the minimum-norm move giving a wanted change of logits
    target = spread * torch.randn((n, k), generator=gen, dtype=torch.float64)
    x = low + scale * (high - low) * torch.rand((n, d), generator=gen, dtype=torch.float64)
    for _ in range(steps):
        x = (x + (target - c - x @ w.T) @ step).clamp(low, high)
    return x


def _ask(oracle, x: torch.Tensor, needed: int, d: int) -> torch.Tensor:
    """The oracle's answers for ``x``; a refusing budget becomes a GibbonInputError naming the total needed."""
    try:
        return oracle(x.to(_device_of(oracle)))
    except QueryBudgetExceeded as e:
        raise GibbonInputError(f"equation solving needs {needed} queries (d + 1 = {d + 1}) but the oracle's budget "
                               f"refused them: {e}") from None


def _round_sizes(n: int, rounds: int) -> list[int]:
    """``n`` queries split over ``rounds`` as evenly as possible (the first rounds get the remainder)."""
    return [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]


def extract_softmax_regression(oracle, input_shape, num_classes: int, *, queries: int | None = None,
                               bounds=(0.0, 1.0), seed: int = 0, ridge: float = 0.0, placement: str = "uniform",
                               rounds: int | None = None) -> ExtractionResult:
    """Recover ``softmax(Wx + b)`` from ``queries`` black-box queries (default ``d + 1``, exactly).

    Tramèr et al. 2016, "Stealing Machine Learning Models via Prediction APIs", arXiv:1609.02943,
    equation-solving attack on (multinomial) logistic regression. With the scores of all classes,
    ``d + 1`` queries (``d = prod(input_shape)``) recover every class at once: the log-odds
    against a reference class give ``k - 1`` linear systems sharing one ``(d + 1) x (d + 1)``
    design matrix. The reference is the class with the fewest saturated (zero) probabilities;
    the result is re-expressed with the last class's row fixed to zero. Equations are weighted
    by the inverse spread a rounding error causes in the log-odds (``1/p`` terms), which leaves
    exact answers' solution unchanged and makes rounded ones' fit much better.

    Placement. ``"uniform"`` (the default) asks all queries at once, uniform in ``bounds``. On
    rounded outputs that wastes most of them: far from the decision boundaries the probabilities
    are near one-hot, round to 0 and give no equation. ``"boundary"`` asks in ``rounds`` (default
    5): the first round uniform in a small box (``FIRST_SCALE`` of it, at the low corner), then
    each later round placed where the model fitted to all answers so far gives every class a
    comparable probability (:func:`place_near_boundaries`), starting from a box growing
    geometrically to the whole (:func:`box_scales`), refitting after each; the total is still
    exactly ``queries``.

    Measured (digits 8x8, d = 64, softmax regression trained 10 epochs, 94.7% test accuracy):
    65 queries recover the class differences to relative error 3.1e-5 from logits and 5.4e-5
    from float32 probabilities (fidelity 100% on the 300 test digits). Probabilities rounded to
    2 decimals: 65 queries leave 9 of 10 classes underdetermined (a warning; fidelity 66%), 325
    queries give 93.0%, 1300 (20 (d + 1)) 97.3%, 3250 98.0%. Binary logistic regression (digits
    3 vs 8): 65 queries, relative error 1.5e-6. A random MNIST-sized model (d = 784, k = 10,
    float32 probabilities): 785 queries, relative error 7.2e-5, 0.7 s on one CPU thread.
    Boundary placement, same digits model, rounded to 2 decimals: 130 queries 97.3% (uniform
    76%), 325 queries 99.3% and relative error 0.042 (uniform 93.0%, 0.27), 1300 100% (0.023).
    MNIST softmax regression (d = 784, float32 probabilities rounded to 2 decimals, agreement on
    the 10k test images): 1570 queries 98.5% (uniform 20.2%), 3925 99.6% and relative error
    0.059 (uniform 20.2%, 1.13), 15,700 99.8% (0.024; 16 s on one CPU thread); 3 decimals: 99.8%
    at 1570, 99.98% at 3925. It needs about ``2 (d + 1)`` queries or more: at ``d + 1`` each
    round is too small to fit the next (MNIST, 785: 12%, worse than uniform's 21%). At 1 decimal
    it fails (MNIST, 15,700: 41%): a class shows at all only from p = 0.05, and the first,
    small-box round's log-odds hardly vary by a rounding step, so no usable first fit forms.

    Classes left with fewer than ``d + 1`` usable equations (probabilities underflowed or rounded
    to 0) are reported in ``underdetermined`` with a warning rather than silently guessed; ask
    more queries, ``placement="boundary"``, or narrower ``bounds`` then.

    Returns:
        :class:`ExtractionResult`, whose ``queries`` is the number of oracle queries spent: exactly
        ``queries`` (``d + 1`` by default), in one batch (uniform) or one batch per round (boundary).

    Args:
        oracle: an :class:`~gibbon.oracles.Oracle` (or any callable ``x -> scores``, wrapped and
            counted), e.g. around :class:`~gibbon.oracles.HttpOracle`; answering logits or
            probabilities (possibly rounded), never labels only.
        input_shape: shape of one input, e.g. ``(1, 8, 8)``.
        num_classes: ``k >= 2`` (2 for binary logistic regression).
        queries: inputs to ask in all (``>= d + 1``; more make rounded outputs fit by least squares).
        bounds: the box queries are drawn from (uniformly) and kept in.
        seed: seeds the queries (a private generator; the global RNG is untouched).
        ridge: optional L2 penalty on the weights (0: plain least squares).
        placement: ``"uniform"`` or ``"boundary"`` (adaptive, for rounded outputs).
        rounds: rounds of the boundary placement (``>= 2``, default 5; each gets an equal share
            of ``queries``); only 1 for the uniform one.

    Example:
        >>> victim = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> result = extract_softmax_regression(victim, (4,), 3)
        >>> result.queries
        5
    """
    d = math.prod(int(s) for s in input_shape)
    k = int(num_classes)
    if k < 2:
        raise GibbonInputError(f"num_classes must be >= 2, got {num_classes}; a logistic regression has 2 or more")
    n = d + 1 if queries is None else int(queries)
    if n < d + 1:
        raise GibbonInputError(f"equation solving needs at least d + 1 = {d + 1} queries for {d} input features, "
                               f"got queries={queries}; pass queries >= {d + 1}")
    if ridge < 0:
        raise GibbonInputError(f"ridge must be >= 0, got {ridge}; pass 0 for plain least squares")
    low, high = float(bounds[0]), float(bounds[1])
    if not high > low:
        raise GibbonInputError(f"bounds must be (low, high) with high > low, got {bounds!r}")
    if placement not in PLACEMENTS:
        raise GibbonInputError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    rounds = (1 if placement == "uniform" else BOUNDARY_ROUNDS) if rounds is None else rounds
    if placement == "uniform" and rounds != 1:
        raise GibbonInputError(f"uniform placement asks in one round, got rounds={rounds}; pass "
                               f"placement='boundary' for adaptive rounds")
    if placement == "boundary" and (isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 2):
        raise GibbonInputError(f"boundary placement needs an integer rounds >= 2 (a uniform first round, then "
                               f"adaptive ones), got rounds={rounds!r}")
    if rounds > n:
        raise GibbonInputError(f"rounds={rounds} is more than queries={n}; pass fewer rounds")
    oracle = as_oracle(oracle)
    if placement == "boundary" and oracle.total_remaining() < n:  # fail before spending any of it
        raise GibbonInputError(f"equation solving needs {n} queries (d + 1 = {d + 1}) but the oracle's budget "
                               f"has {oracle.total_remaining()} left; pass queries <= that or raise the budget")
    gen = torch.Generator().manual_seed(int(seed))
    scales = [1.0] if placement == "uniform" else box_scales(rounds)
    # the first round is uniform; boundary placement asks it in a small box at the low corner (for images
    # the blank one, whose logits are the biases: rarely saturated), where outputs still carry equations
    x = low + scales[0] * (high - low) * torch.rand((_round_sizes(n, rounds)[0], *input_shape), generator=gen)
    inputs, logps, usables = [], [], []
    theta = None  # the fit so far, which places the next round
    for r, size in enumerate(_round_sizes(n, rounds)):
        if r > 0:  # where the model fitted so far puts no class at 0 (see place_near_boundaries)
            x = place_near_boundaries(theta, size, (low, high), gen, scale=scales[r]).float()
            x = x.reshape(size, *input_shape)
        scores = _ask(oracle, x, n, d)
        logp, usable = log_probabilities(scores.detach().cpu())
        if logp.shape[1] != k:
            raise GibbonInputError(f"the oracle answers {logp.shape[1]} scores per input but num_classes={k}")
        inputs.append(torch.cat([x.reshape(size, d).double(), torch.ones(size, 1, dtype=torch.float64)], dim=1))
        logps.append(logp)
        usables.append(usable)
        # the fits that only place the next round are ridged (a coarse, underdetermined fit's min-norm rows can
        # be huge and throw the next queries out of place); the final one uses the caller's ridge
        fit_ridge = ridge if r == len(scales) - 1 or placement == "uniform" else max(ridge, PLACEMENT_RIDGE)
        theta, sq_err, count, short = _fit_log_odds(torch.cat(inputs), torch.cat(logps), torch.cat(usables),
                                                    fit_ridge)
    usable = torch.cat(usables)
    if short:  # not an error: the fit is still the best these answers allow, and says so
        warnings.warn(
            f"{int((~usable).sum())} probabilities underflowed or were rounded to 0, so classes {short} have fewer "
            f"than d + 1 = {d + 1} equations and are not identified; pass more queries (e.g. queries="
            f"{20 * (d + 1)}), placement='boundary' or narrower bounds", stacklevel=2)
    weight, bias = theta[:, :d].float(), theta[:, d].float()
    linear = nn.Linear(d, k)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return ExtractionResult(weight=weight, bias=bias, queries=n, residual=math.sqrt(sq_err / max(count, 1)),
                            saturated=int((~usable).sum()), underdetermined=tuple(short),
                            model=nn.Sequential(nn.Flatten(), linear).eval())


def extraction_error(result: ExtractionResult, true_weight: torch.Tensor, true_bias: torch.Tensor) -> float:
    """Max over classes of the relative L2 error of the class-difference parameters
    ``(w_i - w_k, b_i - b_k)`` (the identifiable part; ``k`` the last class), recovered vs true."""
    true = torch.cat([true_weight.detach().double().cpu().reshape(len(true_bias), -1),
                      true_bias.detach().double().cpu().reshape(-1, 1)], dim=1)
    got = torch.cat([result.weight.double(), result.bias.double().reshape(-1, 1)], dim=1)
    if got.shape != true.shape:
        raise GibbonInputError(f"true parameters shaped {tuple(true.shape)} do not match the result's "
                               f"{tuple(got.shape)}; pass weight (k, d) and bias (k,)")
    true, got = true - true[-1], got - got[-1]
    err = (got - true)[:-1].norm(dim=1) / true[:-1].norm(dim=1).clamp(min=1e-12)
    return float(err.max())


def fidelity(model: nn.Module, victim, x: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` on which ``model`` and ``victim`` (a model or oracle) agree on the top class."""
    agree = 0
    for chunk in x.split(batch_size):
        with torch.no_grad():
            mine = model(chunk.to(_device_of(model))).argmax(1).cpu()
            theirs = victim(chunk.to(_device_of(victim)))
        theirs = (theirs.argmax(1) if theirs.ndim > 1 else theirs).cpu()
        agree += int((mine == theirs).sum())
    return agree / max(len(x), 1)
