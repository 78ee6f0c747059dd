"""Gradient estimation: any gradient attack against a black box, through finite differences.

:class:`EstimatedGradient` wraps an :class:`~gibbon.oracles.Oracle` (or any model, which it
wraps in one) as a differentiable module. Its forward pass returns the oracle's scores; its
backward pass *estimates* the vector-Jacobian product ``g^T d scores / dx`` that autograd asks
for, from queries only:

    grad ~ 1 / (2 sigma S) * sum_{s=1..S} (L(x + sigma u_s) - L(x - sigma u_s)) u_s,
    L(x') = <g, scores(x')>,

with antithetic pairs of directions ``u_s`` (Gaussian for NES, Ilyas, Engstrom, Athalye & Lin
2018, "Black-box Adversarial Attacks with Limited Queries and Information", arXiv:1804.08598;
Rademacher signs for SPSA, Uesato, O'Donoghue, van den Oord & Kohli 2018, "Adversarial Risk and
the Dangers of Evaluating Against Weak Attacks", arXiv:1802.05666, who use it exactly so:
as a drop-in gradient for PGD). Because the estimate is of ``<g, scores>`` for whatever ``g``
the attack's loss hands back, every gradient attack (PGD, APGD, C&W, ...) runs unchanged on a
score-based black box ("compose at the model"). Threat model: black-box, score-based.

Cost: each backward pass queries ``2 * pairs`` points per input row (plus one per forward row);
``queries`` reports them. The query points are clipped into ``bounds``, so a server that
validates its inputs accepts them. No gradient is ever asked of the oracle.

Budgets: an estimate is all or nothing, so a forward pass that will need one is refused, with
:class:`~gibbon.oracles.QueryBudgetExceeded` and before any query, unless the oracle can still
pay for it and one more forward pass per row (to score the attack's next iterate). The
iterative attacks (PGD, BIM, MI-FGSM, APGD) catch that refusal and return their best iterate
so far, and :func:`gibbon.evaluate` scores the rest as unattacked and warns: with a shared budget
(``Oracle(max_total=...)``, a remote API's) an estimated attack stops cleanly instead of failing.
"""

from __future__ import annotations

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.oracles.base import Oracle, QueryBudgetExceeded, as_oracle, requires_scores

METHODS = ("nes", "spsa")


def _directions(method: str, shape, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    if method == "nes":
        u = torch.randn(shape, generator=generator, dtype=like.dtype)
    else:
        u = torch.randint(0, 2, shape, generator=generator).to(like.dtype) * 2 - 1
    return u.to(like.device)


def estimate_gradient(oracle: Oracle, x: torch.Tensor, weights: torch.Tensor, *, method: str = "nes",
                      pairs: int = 25, sigma: float = 1e-3, bounds=(0.0, 1.0), generator: torch.Generator,
                      chunk: int = 8192) -> torch.Tensor:
    """Finite-difference estimate of ``d <weights, scores(x)> / dx`` per row, from ``2 * pairs`` queries a row.

    Args:
        oracle: the black box (queried with detached inputs only).
        x: inputs ``(B, ...)``. weights: ``(B, K)``, the loss's gradient w.r.t. the scores.
        method: ``"nes"`` (Gaussian directions) or ``"spsa"`` (Rademacher).
        pairs: antithetic pairs of directions per row (S above).
        sigma: finite-difference step, in input units.
        bounds: the query points are clipped into this box.
        generator: randomness of the directions.
        chunk: rows of query points sent to the oracle at once.

    Returns:
        The estimate, shaped like ``x``.
    """
    n = x.shape[0]
    u = _directions(method, (n, pairs, *x.shape[1:]), generator, x)
    points = torch.cat([x[:, None] + sigma * u, x[:, None] - sigma * u], dim=1).clamp(*bounds)  # [B, 2S, ...]
    flat = points.reshape(n * 2 * pairs, *x.shape[1:])
    rows = torch.arange(n).repeat_interleave(2 * pairs)
    # row i of the batch is charged its own 2 * pairs queries (per-row counts, as in the forward pass)
    scores = torch.cat([requires_scores(oracle(flat[i:i + chunk].detach(), rows[i:i + chunk]), "gradient estimation")
                        for i in range(0, len(flat), chunk)])
    value = (scores.reshape(n, 2 * pairs, -1) * weights[:, None].to(scores.dtype)).sum(dim=2)  # L at each point
    diff = (value[:, :pairs] - value[:, pairs:]).to(x.dtype)  # L(x + sigma u) - L(x - sigma u)
    return (diff.reshape(n, pairs, *([1] * (x.ndim - 1))) * u).sum(dim=1) / (2 * sigma * pairs)


class _Estimated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, wrapper):
        ctx.wrapper = wrapper
        ctx.save_for_backward(x)
        return wrapper.oracle(x.detach())

    @staticmethod
    def backward(ctx, grad_scores):
        (x,) = ctx.saved_tensors
        w = ctx.wrapper
        grad = estimate_gradient(w.oracle, x.detach(), grad_scores.detach(), method=w.method, pairs=w.pairs,
                                 sigma=w.sigma, bounds=w.bounds, generator=w.generator)
        return grad, None


class EstimatedGradient(nn.Module):
    """A black box made differentiable by NES or SPSA gradient estimates (see the module docstring).

    Args:
        model: an :class:`~gibbon.oracles.Oracle` or a model (wrapped in one); answers with scores.
        method: ``"nes"`` or ``"spsa"``.
        samples: queries per gradient estimate and input row (``2 * pairs``; even, >= 2).
        sigma: finite-difference step in input units (NES: 0.001 as Ilyas et al.; SPSA: 0.01 as
            Uesato et al. for [0, 1] images).
        bounds: the input box; query points are clipped into it.
        seed: seed of the wrapper's own generator (the global RNG is never used).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> black_box = EstimatedGradient(Oracle(net), samples=100)
        >>> x = torch.rand(2, 1, 2, 2, requires_grad=True)
        >>> black_box(x).sum().backward()  # an estimate; the oracle itself never gives a gradient
        >>> x.grad.shape, black_box.queries
        (torch.Size([2, 1, 2, 2]), 202)
    """

    def __init__(self, model, *, method: str = "nes", samples: int = 50, sigma: float = 1e-3, bounds=(0.0, 1.0),
                 seed: int = 0):
        super().__init__()
        if method not in METHODS:
            raise GibbonInputError(f"gradient estimation method must be one of {', '.join(METHODS)}, got {method!r}")
        if isinstance(samples, bool) or int(samples) != samples or samples < 2 or samples % 2:
            raise GibbonInputError(f"samples must be an even whole number >= 2 (antithetic pairs), got {samples!r}")
        if not sigma > 0:
            raise GibbonInputError(f"sigma must be > 0, got {sigma!r}")
        self.oracle = as_oracle(model)
        self.method, self.pairs, self.sigma = method, int(samples) // 2, float(sigma)
        self.bounds = (float(bounds[0]), float(bounds[1]))
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def queries(self) -> int:
        """Rows sent to the oracle so far (forward passes and gradient estimates)."""
        return self.oracle.total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self._check_step(x.shape[0])
            return _Estimated.apply(x, self)
        return self.oracle(x.detach())

    def _check_step(self, rows: int) -> None:
        """Refuse (before any query) a gradient step the budget cannot finish: forward, estimate, next forward."""
        cost = 2 + 2 * self.pairs
        if not bool(self.oracle.affordable(torch.arange(rows), cost).all()):  # counts a shared-total refusal
            raise QueryBudgetExceeded(
                f"an estimated gradient step for {rows} rows needs {cost} queries a row (forward, {2 * self.pairs} "
                f"for the estimate, one to score the next iterate) and the oracle's budget cannot pay for it; "
                "the iterative attacks stop here and keep their best iterate")

    def extra_repr(self) -> str:
        return f"method={self.method!r}, samples={2 * self.pairs}, sigma={self.sigma}"


def parse_gradient(spec: str, model, *, bounds=(0.0, 1.0), seed: int = 0) -> EstimatedGradient:
    """``"nes"``, ``"spsa:samples=100,sigma=0.01"`` -> an :class:`EstimatedGradient` around ``model``."""
    name, _, rest = spec.partition(":")
    params: dict = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in ("samples", "sigma"):
            raise GibbonInputError(f"gradient estimator options are samples=N and sigma=S, got {item!r} in {spec!r}")
        try:
            params[key] = int(value) if key == "samples" else float(value)
        except ValueError:
            raise GibbonInputError(f"{key} must be a number, got {value!r} in {spec!r}") from None
    return EstimatedGradient(model, method=name, bounds=bounds, seed=seed, **params)
