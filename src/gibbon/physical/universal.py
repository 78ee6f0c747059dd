"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi & Frossard 2017, "Universal
adversarial perturbations", arXiv:1610.08401, Algorithm 1).

One perturbation ``v`` with ``||v||_p <= eps`` that changes the model's prediction on most inputs
of a distribution. Algorithm 1 passes over the data; for each point that ``x + v`` does not yet
fool, it finds the minimal extra perturbation that does (DeepFool at ``x + v``) and adds it to
``v``, then projects ``v`` back on the eps-ball. It stops when the fooling rate on the data
reaches ``target_rate`` (the paper's ``1 - delta``) or after ``max_passes``.

Fooling is measured against the model's own clean prediction (``k(x + v) != k(x)``), as in the
paper, not against the true label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gibbon.attacks.deepfool import deepfool
from gibbon.core.checks import GibbonInputError, check_bounds, check_eps
from gibbon.core.norms import get_norm
from gibbon.zoo.training import model_device, predict_labels


@dataclass(frozen=True)
class UniversalResult:
    """A universal perturbation and how it was found.

    Attributes:
        perturbation: ``v``, shaped like one input ``(C, H, W)``.
        eps, norm: its budget.
        fooling_rate: on the data it was computed on, after the last pass.
        history: fooling rate after each pass.
        deepfool_calls: points that needed a DeepFool update (the algorithm's work).
    """

    perturbation: torch.Tensor
    eps: float
    norm: str
    fooling_rate: float
    history: list = field(default_factory=list)
    deepfool_calls: int = 0

    def to_dict(self) -> dict:
        v = self.perturbation.flatten()
        return {"eps": self.eps, "norm": self.norm, "fooling_rate": self.fooling_rate, "history": self.history,
                "deepfool_calls": self.deepfool_calls, "linf": float(v.abs().max()), "l2": float(v.norm())}


def fooling_rate(model, x: torch.Tensor, v: torch.Tensor, *, bounds=(0.0, 1.0), batch_size: int = 500,
                 clean: torch.Tensor | None = None) -> float:
    """Share of ``x`` whose predicted class changes when ``v`` is added (and the result clipped to the box)."""
    lo, hi = check_bounds(bounds)
    clean = predict_labels(model, x, batch_size=batch_size) if clean is None else clean
    perturbed = predict_labels(model, (x + v.to(x.dtype)).clamp(lo, hi), batch_size=batch_size)
    return float((perturbed != clean).float().mean())


def universal_perturbation(model, x: torch.Tensor, *, eps: float, norm: str = "linf", target_rate: float = 0.8,
                           max_passes: int = 5, overshoot: float = 0.02, deepfool_steps: int = 50,
                           bounds=(0.0, 1.0), seed: int = 0, progress: bool = False) -> UniversalResult:
    """Algorithm 1 of Moosavi-Dezfooli et al. on the inputs ``x`` ``(N, C, H, W)``.

    Args:
        eps: the budget of ``v`` in ``norm`` (``"linf"`` or ``"l2"``; the paper's xi).
        target_rate: stop once this share of ``x`` is fooled (the paper's 1 - delta; 0.8 there).
        max_passes: passes over ``x`` at most (each in a fresh random order).
        overshoot, deepfool_steps: DeepFool's, for the per-point updates.
    """
    check_eps(eps)
    lo, hi = check_bounds(bounds)
    if norm not in ("linf", "l2"):
        raise GibbonInputError(f"norm must be linf or l2 (DeepFool's), got {norm!r}")
    if not 0 < target_rate <= 1:
        raise GibbonInputError(f"target_rate must be in (0, 1], got {target_rate}")
    if int(max_passes) != max_passes or max_passes < 1:
        raise GibbonInputError(f"max_passes must be a whole number >= 1, got {max_passes!r}")
    if x.ndim != 4 or len(x) == 0:
        raise GibbonInputError(f"x must be a non-empty (N, C, H, W) batch, got shape {tuple(x.shape)}")
    projector = get_norm(norm)
    device = model_device(model)
    was_training = model.training
    model.eval()
    clean = predict_labels(model, x)
    v = torch.zeros(x.shape[1:], device=device)
    g = torch.Generator().manual_seed(int(seed))
    history, calls = [], 0
    try:
        for _ in range(int(max_passes)):
            order = torch.randperm(len(x), generator=g).tolist()
            for i in _progress(order, progress, len(history) + 1):
                xi = x[i:i + 1].to(device)
                shifted = (xi + v).clamp(lo, hi)
                label = clean[i:i + 1].to(device)
                with torch.no_grad():
                    if int(model(shifted).argmax(-1)) != int(label):
                        continue  # already fooled by v
                calls += 1
                # the minimal extra push from x + v across the boundary, then back onto the eps-ball
                pushed = deepfool(model, shifted, label, norm=norm, steps=deepfool_steps, overshoot=overshoot,
                                  bounds=(lo, hi))
                v = projector.project((v + (pushed - shifted)[0]).unsqueeze(0), eps)[0].detach()
            history.append(fooling_rate(model, x, v.cpu(), bounds=(lo, hi), clean=clean))
            if history[-1] >= target_rate:
                break
    finally:
        model.train(was_training)
    return UniversalResult(v.cpu(), float(eps), norm, history[-1], history, calls)


def _progress(order, enabled: bool, pass_number: int):
    if not enabled:
        return order
    from rich.progress import track

    return track(order, description=f"pass {pass_number}", transient=True)


def universal_sgd(model, x: torch.Tensor, *, eps: float, norm: str = "linf", epochs: int = 5, batch_size: int = 100,
                  step_size: float | None = None, bounds=(0.0, 1.0), seed: int = 0) -> UniversalResult:
    """The stochastic variant (Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein 2020, "Universal
    Adversarial Training", arXiv:1812.03705, Algorithm 1): projected signed-gradient ascent on the
    mean loss of mini-batches of ``x + v``, the per-example cross-entropy against the clean prediction
    clipped at 10 so that points already fooled stop pulling ``v``. Far stronger than Algorithm 1
    under an L-inf budget (docs/physical.md)."""
    from gibbon.core.losses import cross_entropy

    check_eps(eps)
    lo, hi = check_bounds(bounds)
    if x.ndim != 4 or len(x) == 0:
        raise GibbonInputError(f"x must be a non-empty (N, C, H, W) batch, got shape {tuple(x.shape)}")
    if int(epochs) != epochs or epochs < 1:
        raise GibbonInputError(f"epochs must be a whole number >= 1, got {epochs!r}")
    projector = get_norm(norm)
    device = model_device(model)
    step = eps / 10 if step_size is None else step_size
    was_training = model.training
    model.eval()
    clean = predict_labels(model, x)
    v = torch.zeros(x.shape[1:], device=device)
    g = torch.Generator().manual_seed(int(seed))
    history = []
    try:
        for _ in range(int(epochs)):
            order = torch.randperm(len(x), generator=g)
            for start in range(0, len(x), batch_size):
                rows = order[start:start + batch_size]
                xb, yb = x[rows].to(device), clean[rows].to(device)
                delta = v.clone().requires_grad_(True)
                loss = cross_entropy(model((xb + delta).clamp(lo, hi)), yb).clamp(max=10.0).mean()
                (grad,) = torch.autograd.grad(loss, delta)
                v = projector.project((v + step * projector.ascent(grad.unsqueeze(0))[0]).unsqueeze(0), eps)[0]
                v = v.detach()
            history.append(fooling_rate(model, x, v.cpu(), bounds=(lo, hi), clean=clean))
    finally:
        model.train(was_training)
    return UniversalResult(v.cpu(), float(eps), norm, history[-1], history, 0)
