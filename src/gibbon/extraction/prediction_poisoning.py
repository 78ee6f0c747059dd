"""Prediction poisoning: answer with probabilities perturbed so that a copy trained on them learns badly.

Orekondy, Schiele & Fritz 2020, "Prediction Poisoning: Towards Defenses Against DNN Model
Stealing Attacks" (ICLR, arXiv:1906.10908), MAD ("maximizing angular deviation"). An adversary
training a copy ``F(x; w)`` on the answer ``y`` follows the gradient ``a(y) = G^T y`` with
``G = d log F(x; w) / dw`` (``K x P``, one row per class). The defender answers instead the
``y~`` on the simplex, within L1 distance ``eps`` of ``y``, whose gradient ``a(y~)`` points as far
as it can from ``a(y)``. It does not know the adversary's ``w`` and uses its own surrogate.

The search follows the paper's heuristic: the angle is largest at a vertex ``e_k`` of the
simplex, so ``y~ = (1 - alpha) y + alpha e_k`` with the largest ``alpha`` the L1 budget allows
(``||y~ - y||_1 = 2 alpha (1 - y_k)``). ``keep_argmax`` (the paper's MAD-argmax) caps ``alpha``
so the top-1 label never changes, so the honest user's accuracy is untouched. Of the ``K``
vertices, the one whose capped step gives the largest angular deviation is taken. Everything
is computed from the per-input Gram matrix ``G G^T`` (``K x K``): ``a(v) . a(u) = v^T G G^T u``.
"""

from __future__ import annotations

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError


def class_gradient_gram(surrogate: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(B, K, K)``: per input, the Gram matrix of the gradients of ``log softmax(surrogate(x))_k``
    with respect to the surrogate's parameters (``G G^T`` above)."""
    from torch.func import functional_call, jacrev, vmap

    params = {name: p.detach() for name, p in surrogate.named_parameters()}
    buffers = {name: b.detach() for name, b in surrogate.named_buffers()}

    def log_probs(p, one):
        return functional_call(surrogate, (p, buffers), (one[None],)).log_softmax(dim=1)[0]

    jac = vmap(jacrev(log_probs), in_dims=(None, 0))(params, x)  # {name: (B, K, *shape)}
    gram = None
    for j in jac.values():
        flat = j.reshape(j.shape[0], j.shape[1], -1)
        part = flat @ flat.transpose(1, 2)
        gram = part if gram is None else gram + part
    return gram


def _cosine(u: torch.Tensor, v: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """Cosine of the gradients ``G^T u`` and ``G^T v`` per row (u, v: (B, K); gram: (B, K, K))."""
    uv = torch.einsum("bk,bkl,bl->b", u, gram, v)
    uu = torch.einsum("bk,bkl,bl->b", u, gram, u)
    vv = torch.einsum("bk,bkl,bl->b", v, gram, v)
    return uv / (uu * vv).clamp(min=1e-30).sqrt()


def mad_perturb(probs: torch.Tensor, gram: torch.Tensor, eps: float, *, keep_argmax: bool = True) -> torch.Tensor:
    """MAD's answer for probabilities ``probs`` (B, K), given each input's ``gram`` (B, K, K).

    Returns ``y~`` (B, K): rows on the simplex, ``||y~ - y||_1 <= eps``, with the same argmax as
    ``y`` when ``keep_argmax``.
    """
    if not eps >= 0:
        raise GibbonInputError(f"eps (the L1 distortion allowed) must be >= 0, got {eps}")
    y = probs.double()
    gram = gram.double()
    b, k = y.shape
    top = y.argmax(dim=1)
    y_top = y.gather(1, top[:, None])
    best, best_cos = y.clone(), torch.ones(b, dtype=y.dtype)
    for vertex in range(k):
        gap = 2 * (1 - y[:, vertex])
        alpha = torch.where(gap > 0, eps / gap.clamp(min=1e-30), torch.zeros_like(gap)).clamp(max=1.0)
        if keep_argmax:
            # (1 - a) y_top > (1 - a) y_vertex + a  <=>  a < (y_top - y_vertex) / (1 + y_top - y_vertex)
            margin = y_top[:, 0] - y[:, vertex]
            cap = torch.where(top == vertex, torch.ones_like(margin), margin / (1 + margin) * (1 - 1e-6))
            alpha = torch.minimum(alpha, cap)
        e = torch.nn.functional.one_hot(torch.full((b,), vertex), k).to(y)
        candidate = (1 - alpha[:, None]) * y + alpha[:, None] * e
        cos = _cosine(candidate, y, gram)
        better = cos < best_cos
        best[better], best_cos[better] = candidate[better], cos[better]
    return best.to(probs.dtype)


class PredictionPoisoning(nn.Module):
    """A victim whose answers are MAD-perturbed probabilities (Orekondy et al. 2020, arXiv:1906.10908).

    Args:
        victim: the protected model (returns logits).
        surrogate: the defender's stand-in for the adversary's copy (only its gradients are used).
        eps: L1 distortion allowed per answer (the paper sweeps 0 to 2; 2 allows any answer).
        keep_argmax: never change the top-1 label (MAD-argmax).
        batch_size: inputs per Gram computation (memory: ``batch_size * K * P`` floats).

    Example:
        >>> victim, surrogate = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
        >>> answer = PredictionPoisoning(victim, surrogate, eps=0.5)(torch.rand(5, 4))
        >>> bool(torch.allclose(answer.sum(1), torch.ones(5)))
        True
    """

    def __init__(self, victim: nn.Module, surrogate: nn.Module, eps: float, *, keep_argmax: bool = True,
                 batch_size: int = 64):
        super().__init__()
        if not 0 <= eps <= 2:
            raise GibbonInputError(f"eps is an L1 distance between probability vectors: in [0, 2], got {eps}")
        if batch_size < 1:
            raise GibbonInputError(f"batch_size must be >= 1, got {batch_size}")
        self.victim, self.surrogate = victim, surrogate.eval()
        self.eps, self.keep_argmax, self.batch_size = float(eps), bool(keep_argmax), int(batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for chunk in x.split(self.batch_size):
            with torch.no_grad():
                probs = self.victim(chunk).float().softmax(dim=1)
            gram = class_gradient_gram(self.surrogate, chunk)
            out.append(mad_perturb(probs, gram, self.eps, keep_argmax=self.keep_argmax))
        return torch.cat(out) if out else torch.zeros(0)


class _LogOf(nn.Module):
    """``log`` of a probability-answering module: logits whose softmax is those probabilities again."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).clamp_min(1e-38).log()


def mad_served_model(model: nn.Module, card: dict, eps: float, *, surrogate_arch: str | None = None,
                     seed: int = 0) -> nn.Module:
    """``model`` as ``gibbon serve --mad-eps`` serves it: logits whose softmax is the MAD-argmax answer.

    The defender's surrogate is a randomly initialised ``surrogate_arch`` (default: the served
    model's own architecture from its card), seeded by ``seed``, on the model's device.
    """
    from gibbon import zoo

    arch = surrogate_arch or card.get("architecture")
    if not arch:
        raise GibbonInputError("--mad-eps needs a surrogate architecture: the card names none, pass --mad-surrogate "
                               "ARCH (see `gibbon zoo`)")
    shape = tuple(int(s) for s in card["input_shape"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        surrogate = zoo.build(arch, input_shape=shape, num_classes=int(card["num_classes"]))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return _LogOf(PredictionPoisoning(model, surrogate.to(device), eps)).eval()
