"""Jacobian-based saliency map attack, JSMA (Papernot, McDaniel, Jha, Fredrikson, Celik & Swami
2016, "The Limitations of Deep Learning in Adversarial Settings", arXiv:1511.07528).

White-box, targeted-only, L0 minimal-perturbation attack (bounded by ``max_distortion``): each
iteration computes the forward derivative, scores every *pair* of features still in the search
domain with the saliency map of Alg. 3 / eq. 10 -- ``alpha = sum_{i in pair} dF_t/dx_i``,
``beta = sum_{i in pair} sum_{j != t} dF_j/dx_i``; increasing features (``theta > 0``) need
``alpha > 0, beta < 0``, decreasing ones ``alpha < 0, beta > 0``; the pair maximising
``-alpha * beta`` wins -- and moves both features by ``theta`` of the box width. A feature that
reaches the edge of the box leaves the domain. A sample stops when it is classified as the
target, when ``max_distortion`` of its features have changed, or when no pair qualifies.

The forward derivative is that of the logits by default (the version Carlini & Wagner 2017,
arXiv:1608.04644, call JSMA-Z, and CleverHans' choice); ``use_logits=False`` differentiates the
softmax output instead (JSMA-F). Two vector-Jacobian products per iteration suffice: ``alpha``
from the target output, ``beta`` from the sum of all outputs minus it. A sample's iterations stop
at ``floor(max_distortion * d / 2)`` pairs, so at most ``max_distortion`` of its features change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import prepare
from gibbon.attacks.registry import AttackConfig, register
from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import get_norm

NORMS = ("l0",)
CHUNK = 1 << 22  # pair-score entries computed at once (4M floats: 784 features -> ~7 samples)


def _derivatives(model, x, target, use_logits):
    """``alpha [B, d]`` (target derivative) and ``beta [B, d]`` (sum of the others' derivatives)."""
    x_var = x.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x_var)
        out = out if use_logits else out.softmax(dim=1)
        target_out = out.gather(1, target[:, None]).sum()
        (alpha,) = torch.autograd.grad(target_out, x_var, retain_graph=True)
        (total,) = torch.autograd.grad(out.sum(), x_var)
    alpha, total = alpha.flatten(1), total.flatten(1)
    return alpha, total - alpha, out.detach()


def _best_pairs(alpha, beta, domain, increase: bool):
    """Per sample, the pair ``(p, q)``, ``p < q``, both in ``domain``, maximising eq. 10; ``found [B]``."""
    n, d = alpha.shape
    upper = torch.ones(d, d, dtype=torch.bool, device=alpha.device).triu(1)
    chunk = max(1, CHUNK // (d * d))
    p_all, q_all, found_all = [], [], []
    for i in range(0, n, chunk):
        a, b, m = alpha[i:i + chunk], beta[i:i + chunk], domain[i:i + chunk]
        pair_a, pair_b = a[:, :, None] + a[:, None, :], b[:, :, None] + b[:, None, :]
        ok = (pair_a > 0) & (pair_b < 0) if increase else (pair_a < 0) & (pair_b > 0)
        ok &= upper & m[:, :, None] & m[:, None, :]
        score = torch.where(ok, -pair_a * pair_b, torch.full_like(pair_a, -1.0)).flatten(1)
        best = score.argmax(dim=1)
        p_all.append(best // d), q_all.append(best % d), found_all.append(ok.flatten(1).any(dim=1))
    return torch.cat(p_all), torch.cat(q_all), torch.cat(found_all)


def jsma(model, x, y, *, target=None, eps=None, norm="l0", theta: float = 1.0, max_distortion: float = 0.145,
         use_logits: bool = True, bounds=(0.0, 1.0), generator=None) -> torch.Tensor:
    """Targeted JSMA with the pairwise saliency map.

    Args:
        model: callable ``x -> logits``. x: inputs ``(B, ...)`` in ``bounds``. y: true labels ``(B,)``.
        target: target classes ``(B,)`` (required).
        eps: ignored (minimal attack: evaluate scores it by distance). norm: ``"l0"`` only.
        theta: change per selected feature as a fraction of the box width (paper: +1, set to
            the maximum; negative values decrease features).
        max_distortion: largest fraction gamma of features changed (paper: 14.5% on MNIST).
        use_logits: derivatives of the logits (JSMA-Z, default) or of the softmax (JSMA-F).
        bounds: valid box. generator: unused (deterministic), accepted for a uniform API.

    Returns:
        ``x_adv`` shaped like ``x``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
        >>> x = torch.rand(2, 1, 4, 4) * 0.5
        >>> x_adv = jsma(model, x, torch.tensor([0, 1]), target=torch.tensor([1, 2]), max_distortion=0.25)
        >>> ((x_adv != x).flatten(1).sum(1) <= 4).tolist()
        [True, True]
    """
    lo, hi = prepare(x, y, eps=eps, bounds=bounds, target=target, norm_name=str(get_norm(norm)), allowed_norms=NORMS,
                     model=model)
    if target is None:
        raise GibbonInputError("jsma is a targeted attack; pass target= (e.g. (y + 1) % num_classes)")
    if theta == 0 or not 0 <= max_distortion <= 1:
        raise GibbonInputError("jsma needs theta != 0 and 0 <= max_distortion <= 1")
    x = x.detach()
    n, d = x.shape[0], x[0].numel()
    increase = theta > 0
    x_adv = x.clone().flatten(1)
    domain = x_adv < hi if increase else x_adv > lo  # Gamma: features that can still move
    max_iters = int(max_distortion * d) // 2  # two features per iteration
    idx = torch.arange(n, device=x.device)
    for _ in range(max_iters):
        alpha, beta, out = _derivatives(model, x_adv[idx].reshape(-1, *x.shape[1:]), target[idx], use_logits)
        p, q, found = _best_pairs(alpha, beta, domain[idx], increase)
        keep = (out.argmax(dim=1) != target[idx]) & found
        idx, p, q = idx[keep], p[keep], q[keep]
        if idx.numel() == 0:
            break
        for f in (p, q):  # Alg. 3: X_f <- clip(X_f + theta), remove saturated features from Gamma
            new = (x_adv[idx, f] + theta * (hi - lo)).clamp(lo, hi)
            x_adv[idx, f] = new
            domain[idx, f] = (new < hi) if increase else (new > lo)
    return x_adv.reshape(x.shape)


@register("jsma")
@dataclass(frozen=True)
class JSMA(AttackConfig):
    """Config for :func:`jsma` (registry name ``jsma``)."""

    theta: float = 1.0
    max_distortion: float = 0.145
    use_logits: bool = True
    norms = NORMS
    minimal = True
    targeted_only = True

    def __call__(self, model, x, y, *, eps=None, norm="l0", target=None, bounds=(0.0, 1.0), generator=None):
        return jsma(model, x, y, eps=eps, norm=norm, target=target, bounds=bounds, generator=generator, **self.params())
