"""Influence functions (Koh & Liang 2017, "Understanding Black-box Predictions via Influence
Functions", arXiv:1703.04730): how a test loss would move if one training point were upweighted.

``I_up,loss(z, z_test) = -grad L(z_test)^T H^-1 grad L(z)`` where ``H`` is the Hessian of the
training objective ``mean_i L(z_i) + (weight_decay / 2) ||theta||^2`` at the trained parameters.
``H^-1 v`` is solved exactly (the Hessian built by double backward; fine up to a few thousand
parameters) or with LiSSA (Agarwal, Bullins & Hazan 2017, "Second-Order Stochastic Optimization
for Machine Learning in Linear Time", arXiv:1602.03943) from mini-batch Hessian-vector products.
``params="last"`` restricts theta to the last ``nn.Linear`` (the rest frozen), as Koh & Liang did
for their Inception model. Everything runs in float64 on a functional copy of the weights; the
caller's model is never modified.

:func:`leave_one_out_check` validates the scores as Koh & Liang did (section 4.1): retrain without
each of the top-k points by |influence| and correlate the actual change in test loss with the
predicted one; :func:`lbfgs_fit` is the full-batch float64 L-BFGS trainer that makes the retrained
optimum precise enough for that (warm-started from the full-data optimum).
"""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

from gibbon.core.checks import GibbonInputError
from gibbon.poisoning.features import last_linear

METHODS, PARAMS = ("exact", "lissa"), ("all", "last")


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Eval mode (no dropout, fixed batch-norm statistics) for the block, the caller's mode restored."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def chosen_names(model: nn.Module, params: str) -> list[str]:
    """Names of the parameters influence is taken over: every one, or the last linear layer's."""
    if params not in PARAMS:
        raise GibbonInputError(f"params must be one of {PARAMS}, got {params!r}")
    if params == "all":
        return [n for n, _ in model.named_parameters()]
    head = last_linear(model)
    prefix = next(name for name, m in model.named_modules() if m is head)
    return [f"{prefix}.{n}" if prefix else n for n, _ in head.named_parameters()]


@dataclass(frozen=True)
class LossFn:
    """Per-example cross-entropy of ``model`` as a function of a flat vector over ``names``; the
    other weights and buffers are frozen float copies (``fixed``)."""

    model: nn.Module
    names: tuple
    shapes: tuple
    fixed: dict
    theta0: torch.Tensor

    def split(self, theta: torch.Tensor) -> dict:
        sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(theta, sizes), self.shapes)}

    def logits(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x.to(device=self.theta0.device, dtype=self.theta0.dtype)
        return functional_call(self.model, {**self.fixed, **self.split(theta)}, (x,))

    def losses(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(theta, x), y.to(self.theta0.device), reduction="none")


def loss_function(model: nn.Module, params: str = "all", dtype=torch.float64) -> LossFn:
    names = chosen_names(model, params)
    named = dict(model.named_parameters())
    cast = lambda t: t.detach().to(dtype) if t.is_floating_point() else t.detach()  # noqa: E731
    fixed = {n: cast(p) for n, p in named.items() if n not in names}
    fixed.update({n: cast(b) for n, b in model.named_buffers()})
    theta0 = torch.cat([cast(named[n]).reshape(-1) for n in names])
    return LossFn(model, tuple(names), tuple(named[n].shape for n in names), fixed, theta0)


def _chunks(n: int, batch_size: int):
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def per_example_grads(fn: LossFn, theta, x, y, *, batch_size: int = 256) -> torch.Tensor:
    """``(N, P)`` gradients of each example's loss (no regulariser: upweighting adds only the loss)."""
    one = lambda th, xi, yi: fn.losses(th, xi[None], yi[None])[0]  # noqa: E731
    g = vmap(grad(one), in_dims=(None, 0, 0))
    parts = [g(theta, x[s].to(theta.device), y[s].to(theta.device)) for s in _chunks(len(x), batch_size)]
    return torch.cat(parts)


def mean_grad(fn: LossFn, theta, x, y, *, batch_size: int = 1024) -> torch.Tensor:
    """Gradient of the mean loss over ``(x, y)`` (the test loss when given test points)."""
    total = lambda th, xs, ys: fn.losses(th, xs, ys).sum()  # noqa: E731
    return sum(grad(total)(theta, x[s], y[s]) for s in _chunks(len(x), batch_size)) / len(x)


def hvp(fn: LossFn, theta, x, y, v, *, weight_decay: float, batch_size: int = 1024) -> torch.Tensor:
    """``H v`` for the training objective over ``(x, y)`` (mean loss plus the L2 term)."""
    out = weight_decay * v
    for s in _chunks(len(x), batch_size):
        g = grad(lambda th: fn.losses(th, x[s], y[s]).sum())
        out = out + jvp(g, (theta,), (v,))[1] / len(x)
    return out


def hessian(fn: LossFn, theta, x, y, *, weight_decay: float, batch_size: int = 1024) -> torch.Tensor:
    """The ``(P, P)`` Hessian of the training objective, reverse-over-reverse, chunked over the data."""
    h = weight_decay * torch.eye(len(theta), dtype=theta.dtype, device=theta.device)
    for s in _chunks(len(x), batch_size):
        g = grad(lambda th: fn.losses(th, x[s], y[s]).sum())
        h = h + jacrev(g, chunk_size=256)(theta) / len(x)
    return (h + h.T) / 2


def top_eigenvalue(fn: LossFn, theta, x, y, *, weight_decay: float, iters: int = 20, seed: int = 0) -> float:
    """Largest |eigenvalue| of the objective's Hessian by power iteration (LiSSA's scale)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(len(theta), generator=gen, dtype=theta.dtype).to(theta.device)
    lam = 0.0
    for _ in range(iters):
        v = v / v.norm()
        hv = hvp(fn, theta, x, y, v, weight_decay=weight_decay)
        lam, v = float(v @ hv), hv
    return abs(lam)


def inverse_hvp(fn: LossFn, theta, x, y, v, *, weight_decay: float, method: str = "exact", damping: float = 0.0,
                lissa_depth: int = 1000, lissa_repeats: int = 4, lissa_scale: float | None = None,
                lissa_batch: int = 100, batch_size: int = 1024, seed: int = 0) -> torch.Tensor:
    """``(H + damping I)^-1 v``. LiSSA runs ``h_j = v + (1 - damping/scale) h_{j-1} - H_B h_{j-1}/scale``
    on a fresh mini-batch ``B`` each step, whose fixed point is ``scale (H + damping I)^-1 v``; so
    the recursion's own damping is ``damping / scale`` and the estimate is ``h_depth / scale``, averaged
    over ``lissa_repeats`` runs. It converges when ``scale`` exceeds ``H``'s top eigenvalue (default:
    1.2 times a power-iteration estimate) and ``H + damping I`` is positive definite."""
    check_options(method, damping)
    if method == "exact":
        h = hessian(fn, theta, x, y, weight_decay=weight_decay + damping, batch_size=batch_size)
        return torch.linalg.solve(h, v)
    scale = lissa_scale or 1.2 * (top_eigenvalue(fn, theta, x, y, weight_decay=weight_decay, seed=seed) + damping)
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(v)
    for _ in range(lissa_repeats):
        h = v.clone()
        for _ in range(lissa_depth):
            b = torch.randint(len(x), (min(lissa_batch, len(x)),), generator=gen)
            hv = hvp(fn, theta, x[b], y[b], h, weight_decay=weight_decay + damping, batch_size=len(b))
            h = v + h - hv / scale
        total = total + h / scale
    return total / lissa_repeats


def check_options(method: str, damping: float) -> None:
    if method not in METHODS:
        raise GibbonInputError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(damping, (int, float)) or not damping >= 0:
        raise GibbonInputError(f"damping must be a number >= 0, got {damping!r}; try 0.0 or 0.01")


def check_set(x, y, what: str) -> None:
    if len(x) == 0:
        raise GibbonInputError(f"the {what} set is empty; pass at least one {what} point")
    if y.ndim != 1 or len(x) != len(y):
        raise GibbonInputError(f"{what} inputs and labels disagree: {len(x)} inputs, labels of shape "
                               f"{tuple(y.shape)}; pass one int64 label per input")


def influence_scores(model: nn.Module, train_x, train_y, test_x, test_y, *, weight_decay: float,
                     method: str = "exact", params: str = "all", damping: float = 0.0, lissa_depth: int = 1000,
                     lissa_repeats: int = 4, lissa_scale: float | None = None, lissa_batch: int = 100,
                     batch_size: int = 256, seed: int = 0) -> torch.Tensor:
    """``I_up,loss(z_i, z_test)`` for every training point, float64 on the model's device.

    The test loss is the mean over the given test points. Positive: upweighting ``z_i`` raises the
    test loss (a harmful point); negative: it lowers it (helpful). ``weight_decay`` must be the L2
    coefficient the model was trained with (objective ``mean loss + weight_decay/2 ||theta||^2``)."""
    check_set(train_x, train_y, "training")
    check_set(test_x, test_y, "test")
    check_options(method, damping)
    if not weight_decay >= 0:
        raise GibbonInputError(f"weight_decay must be >= 0, got {weight_decay!r}")
    with evaluating(model):
        fn = loss_function(model, params)
        theta, dev = fn.theta0, fn.theta0.device
        tx, ty = train_x.to(dev), train_y.to(dev)
        s_test = inverse_hvp(fn, theta, tx, ty, mean_grad(fn, theta, test_x.to(dev), test_y.to(dev)),
                             weight_decay=weight_decay, method=method, damping=damping, lissa_depth=lissa_depth,
                             lissa_repeats=lissa_repeats, lissa_scale=lissa_scale, lissa_batch=lissa_batch, seed=seed)
        parts = [-(per_example_grads(fn, theta, tx[s], ty[s], batch_size=batch_size) @ s_test)
                 for s in _chunks(len(tx), 4 * batch_size)]
    return torch.cat(parts)


def predicted_loo_change(scores: torch.Tensor, n_train: int) -> torch.Tensor:
    """First-order change in test loss when each point is *removed*: removing ``z`` is upweighting
    it by ``epsilon = -1/n``, so ``L_test(theta_-z) - L_test(theta) ~= -I_up,loss(z) / n``."""
    if int(n_train) < 1:
        raise GibbonInputError(f"n_train must be >= 1, got {n_train!r}")
    return -scores / int(n_train)


def most_influential(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(helpful, harmful)`` indices, ``k`` each, strongest first. Harmful points have the largest
    scores (upweighting raises the test loss, removing lowers it); helpful ones the most negative."""
    if not 1 <= int(k) <= len(scores):
        raise GibbonInputError(f"k must be in [1, {len(scores)}], got {k!r}")
    order = torch.argsort(scores)
    return order[:k], order.flip(0)[:k]


def top_by_magnitude(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` points with the largest ``|I_up,loss|``: Koh & Liang's choice for the LOO check."""
    if not 1 <= int(k) <= len(scores):
        raise GibbonInputError(f"k must be in [1, {len(scores)}], got {k!r}")
    return torch.argsort(scores.abs(), descending=True)[:k]


# --------------------------------------------------------------------------- leave-one-out check


def lbfgs_fit(model: nn.Module, x, y, *, weight_decay: float, params: str = "all", n_total: int | None = None,
              max_iter: int = 500, tol: float = 1e-9, rounds: int = 10, dtype=torch.float64) -> nn.Module:
    """A float64 copy of ``model`` trained (from its current weights) to minimise
    ``sum_i L(z_i) / n_total + weight_decay/2 ||theta||^2`` over the chosen parameters, full batch.

    ``n_total`` defaults to ``len(x)``; the LOO check passes the full set's size so that dropping a
    point is exactly Koh & Liang's ``epsilon = -1/n`` (the L2 term keeps its weight). Stops when the
    gradient's max-norm is under ``tol`` or after ``rounds`` L-BFGS runs of ``max_iter`` steps."""
    check_set(x, y, "training")
    net = copy.deepcopy(model).to(dtype)
    names = set(chosen_names(net, params))
    chosen = [p for n, p in net.named_parameters() if n in names]
    frozen = [p for n, p in net.named_parameters() if n not in names and p.requires_grad]
    dev = chosen[0].device
    x, y, n = x.to(device=dev, dtype=dtype), y.to(dev), int(n_total or len(x))
    for p in frozen:
        p.requires_grad_(False)  # the copy's, restored below
    opt = torch.optim.LBFGS(chosen, lr=1, max_iter=max_iter, history_size=50, tolerance_grad=tol,
                            tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(forward(), y, reduction="sum") / n
        loss = loss + weight_decay / 2 * sum((p * p).sum() for p in chosen)
        loss.backward()
        return loss

    forward = lambda: net(x)  # noqa: E731
    if params == "last" and isinstance(net, nn.Sequential) and net[-1] is last_linear(net):
        with torch.no_grad(), evaluating(net):  # frozen body: its features are computed once
            feats = net[:-1](x)
        forward = lambda: net[-1](feats)  # noqa: E731
    with evaluating(net):
        for _ in range(rounds):
            opt.step(closure)
            closure()
            if max(float(p.grad.abs().max()) for p in chosen) < tol:
                break
    for p in frozen:
        p.requires_grad_(True)
    net.zero_grad(set_to_none=True)
    return net


@torch.no_grad()
def test_loss(model: nn.Module, x, y) -> float:
    """Mean cross-entropy of ``model`` on ``(x, y)`` in the model's own precision, eval mode."""
    p = next(model.parameters())
    with evaluating(model):
        return float(F.cross_entropy(model(x.to(device=p.device, dtype=p.dtype)), y.to(p.device)))


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    rank = lambda t: torch.argsort(torch.argsort(t)).double()  # noqa: E731  (ties: continuous data)
    return pearson(rank(a), rank(b))


@dataclass(frozen=True)
class LooResult:
    """Predicted (``-I_up,loss / n``) vs actual change in test loss when each point is removed."""

    indices: torch.Tensor
    predicted: torch.Tensor
    actual: torch.Tensor
    pearson: float
    spearman: float
    base_loss: float
    seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(indices=self.indices.tolist(), predicted=self.predicted.tolist(), actual=self.actual.tolist())
        return d


def leave_one_out_check(train_fn, model: nn.Module, train_x, train_y, test_x, test_y, indices,
                        predicted: torch.Tensor) -> LooResult:
    """Retrain without each training point in ``indices`` and measure the test loss's change.

    ``train_fn(x, y, init)`` returns a model trained on ``(x, y)`` starting from ``init`` (not
    modifying it); ``model`` is the full-data optimum it warm-starts from. The baseline is
    ``train_fn`` on the full set from ``model`` too, so extra optimisation steps cancel out.
    ``predicted`` holds the predicted changes for all training points or for ``indices`` alone
    (from :func:`predicted_loo_change`). Choose ``indices`` with :func:`top_by_magnitude`."""
    check_set(train_x, train_y, "training")
    check_set(test_x, test_y, "test")
    indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1).cpu()
    if len(indices) < 2 or int(indices.min()) < 0 or int(indices.max()) >= len(train_x):
        raise GibbonInputError(f"indices must hold at least 2 training rows in [0, {len(train_x)}); got "
                               f"{len(indices)} rows")
    predicted = predicted.detach().double().cpu().reshape(-1)
    if len(predicted) == len(train_x):
        predicted = predicted[indices]
    elif len(predicted) != len(indices):
        raise GibbonInputError(f"predicted has {len(predicted)} values; pass one per training point "
                               f"({len(train_x)}) or one per index ({len(indices)})")
    start = time.perf_counter()
    base = test_loss(train_fn(train_x, train_y, model), test_x, test_y)
    actual = []
    for i in indices.tolist():
        keep = torch.ones(len(train_x), dtype=torch.bool, device=train_x.device)
        keep[i] = False
        actual.append(test_loss(train_fn(train_x[keep], train_y[keep], model), test_x, test_y) - base)
    actual = torch.tensor(actual, dtype=torch.float64)
    return LooResult(indices, predicted, actual, pearson(predicted, actual), spearman(predicted, actual), base,
                     time.perf_counter() - start)
