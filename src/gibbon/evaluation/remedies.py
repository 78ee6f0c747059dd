"""The remedies :func:`gibbon.evaluation.diagnose.diagnose` applies once a check has found why
the plain attacks fail, and the scoring of what they find.

Each remedy changes only how adversarial examples are *searched for*; every candidate is scored
on the model itself, so a remedy can lower a robust accuracy only with real adversarial
examples (an approximate gradient never counts as a success).

* ``bpda``: straight-through gradients for thresholds, rounding, signs and detaches
  (:class:`gibbon.defenses.straight_through.StraightThrough`; Athalye et al. 2018, section 4.1);
* ``eot``: the average of a randomized model over ``k`` draws (:class:`gibbon.defenses.eot.EOT`;
  Athalye et al. 2018, section 4.3), ``k`` chosen from the measured gradient variance
  (:func:`eot_samples`); randomized models are scored as the mean over :data:`SCORING_DRAWS` draws;
* ``margin``: the C&W margin loss where the softmax saturates (Carlini & Wagner 2017,
  arXiv:1608.04644), next to the scale-invariant DLR loss the checks always run;
* ``log-probabilities``: attack ``log`` of a model that outputs probabilities;
* ``gradient-free``: Square with five times the check's queries where no gradient is usable
  (Andriushchenko et al. 2020, arXiv:1912.00049);
* ``surrogate``: a network distilled on the model's own answers, attacked with PGD and
  transferred (Papernot et al. 2017, arXiv:1602.02697; Athalye et al. 2018, section 5), where
  no gradient is usable.

References:
    Athalye, Carlini & Wagner (2018), arXiv:1802.00420.
    Carlini et al. (2019), "On Evaluating Adversarial Robustness", arXiv:1902.06705, section 4.
"""

from __future__ import annotations

import difflib
import math

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError
from gibbon.evaluation.adapters import correct

REMEDIES = ("bpda", "eot", "margin", "log-probabilities", "gradient-free", "surrogate")
SCORING_DRAWS = 10
"""Fresh draws a randomized model's answers are averaged over (robust accuracy = mean over draws)."""
VARIANCE_DRAWS = 8
"""Gradient draws :func:`gradient_variance` measures."""
EOT_TARGET = 0.25
"""EOT averages enough draws that the averaged gradient's variance is at most this fraction of
its squared norm (cosine with the expected gradient about 0.9 or better)."""
EOT_MAX = 32
SURROGATE_POINTS, SURROGATE_EPOCHS = 5000, 10


def parse_remedies(spec) -> tuple[str, ...]:
    """``"auto"``/None: all of :data:`REMEDIES`; ``"none"`` or ``()``: none; else names, comma-separated
    or a list. An unknown name is a :class:`GibbonInputError` naming the nearest valid one.

    Example:
        >>> parse_remedies("bpda,eot")
        ('bpda', 'eot')
        >>> parse_remedies("none")
        ()
    """
    if spec is None or spec == "auto":
        return REMEDIES
    if spec == "none":
        return ()
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    for name in names:
        if name not in REMEDIES:
            near = difflib.get_close_matches(str(name), REMEDIES, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise GibbonInputError(f"unknown remedy {name!r}; {hint}choose from {', '.join(REMEDIES)}, 'auto' or 'none'")
    return tuple(dict.fromkeys(names))


@torch.no_grad()
def robust_fraction(model, x_adv: torch.Tensor, y: torch.Tensor, *, draws: int, batch_size: int) -> torch.Tensor:
    """Per sample, the fraction of ``draws`` calls that classify ``x_adv`` correctly (float ``[N]``)."""
    hits = torch.zeros(len(y), dtype=torch.float64)
    for _ in range(draws):
        for start in range(0, len(y), batch_size):
            xb = x_adv[start:start + batch_size]
            hits[start:start + batch_size] += correct(model(xb), y[start:start + batch_size].to(xb.device)).cpu().double()
    return hits / draws


def _input_gradients(model, x: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor | None:
    from gibbon.core.losses import get_loss

    x_var = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            loss = get_loss(loss)(model(x_var), y).sum()
            (grad,) = torch.autograd.grad(loss, x_var, allow_unused=True)
    except Exception:  # noqa: BLE001 - no usable gradient is an answer here, not an error
        return None
    return None if grad is None else torch.nan_to_num(grad.detach(), nan=0.0, posinf=0.0, neginf=0.0)


def usable_gradient(model, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Does a gradient of the cross-entropy or of the margin loss reach the input through
    ``model``, non-zero and finite, on most samples? (A saturated softmax zeroes the first only.)"""
    best = 0.0
    for loss in ("ce", "margin"):
        grad = _input_gradients(model, x, y, loss)
        if grad is not None:
            best = max(best, float((grad.reshape(len(x), -1).abs().sum(dim=1) > 0).double().mean()))
    return {"usable": best > 0.5, "nonzero_fraction": best}


def gradient_variance(model, x: torch.Tensor, y: torch.Tensor, *, draws: int = VARIANCE_DRAWS) -> dict:
    """How noisy one gradient of a randomized model is: per sample, the variance of ``draws``
    gradients relative to the squared norm of their mean (0 for a deterministic model).

    Returns the median relative variance and the median cosine of one draw with the mean.
    """
    grads = [_input_gradients(model, x, y) for _ in range(draws)]
    if any(g is None for g in grads):
        return {"draws": draws, "relative_variance": None, "cosine_to_mean": None}
    g = torch.stack([gr.reshape(len(x), -1).double() for gr in grads])  # (draws, B, d)
    mean = g.mean(dim=0)
    spread = ((g - mean) ** 2).sum(dim=2).sum(dim=0) / max(draws - 1, 1)
    rel = spread / (mean ** 2).sum(dim=1).clamp_min(1e-30)
    cos = F.cosine_similarity(g, mean.expand_as(g), dim=2)
    return {"draws": draws, "relative_variance": float(rel.median()), "cosine_to_mean": float(cos.median())}


def eot_samples(relative_variance: float | None, *, target: float = EOT_TARGET, cap: int = EOT_MAX) -> int:
    """Draws EOT averages so the averaged gradient's relative variance ``v / k`` is at most ``target``.

    Example:
        >>> eot_samples(3.0), eot_samples(0.01), eot_samples(1e6)
        (12, 2, 32)
    """
    if relative_variance is None or not math.isfinite(relative_variance):
        return cap
    return int(min(max(math.ceil(relative_variance / target), 2), cap))


def distill_surrogate(model, x: torch.Tensor, like, *, seed: int, batch_size: int, epochs: int = SURROGATE_EPOCHS):
    """A network trained on ``model``'s own soft answers for ``x`` (its queries): the attacker's
    differentiable stand-in when the model gives no usable gradient. Architecture: the zoo's
    ``mlp-200-200`` for ``like``'s input shape."""
    from gibbon import zoo

    with torch.no_grad():
        soft = torch.cat([model(chunk).float().softmax(dim=1) for chunk in x.split(batch_size)])
    keep = torch.isfinite(soft).all(dim=1)
    x, soft = x[keep], soft[keep]
    if len(x) == 0:
        raise GibbonInputError("the model gave no finite answer to distill a surrogate from")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = zoo.build("mlp-200-200", like).to(x.device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(epochs):
            for idx in torch.randperm(len(x)).split(128):
                opt.zero_grad()
                F.kl_div(net(x[idx]).log_softmax(dim=1), soft[idx], reduction="batchmean").backward()
                opt.step()
    return net.eval().requires_grad_(False)
