"""Small pieces every gradient attack shares: the input gradient, targets, generators, boxes."""

from __future__ import annotations

import torch

from gibbon.core.checks import GibbonInputError, check_attack_inputs, check_eps, check_label_range
from gibbon.core.losses import get_loss

DEFAULT_SEED = 0


def default_generator(generator: torch.Generator | None) -> torch.Generator:
    """The caller's generator, or a fresh one seeded with 0: attacks never touch the global RNG."""
    return generator if generator is not None else torch.Generator().manual_seed(DEFAULT_SEED)


def count_classes(model, x: torch.Tensor) -> int | None:
    """How many classes ``model`` scores: its ``num_classes`` if it says, else the width of one
    forward pass on ``x[:1]`` (no gradient, the global RNG untouched). None where that cannot be
    known for free: an oracle counts every row as a query, a model in training mode (attacks
    inside adversarial training) would update its BatchNorm statistics, and a model that fails
    on the probe row leaves the failure to the attack itself."""
    known = getattr(model, "num_classes", None)
    if isinstance(known, int):
        return known
    if not isinstance(model, torch.nn.Module) or x.ndim == 0 or x.shape[0] == 0:
        return None
    if hasattr(model, "queries") or hasattr(model, "total_remaining"):  # a query-counting wrapper: not free
        return None
    if any(m.training for m in model.modules()):  # a forward in train mode moves BatchNorm statistics
        return None
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            out = model(x[:1])
    except Exception:  # noqa: BLE001 - a hostile model: the attack meets (and reports) its error itself
        return None
    return int(out.shape[1]) if isinstance(out, torch.Tensor) and out.ndim == 2 else None


def prepare(x, y, *, eps, bounds, target, norm_name: str, allowed_norms, model=None) -> tuple[float, float]:
    """Validate one attack call; returns the checked bounds. With ``model``, labels and targets
    must also be classes it can output."""
    if norm_name not in allowed_norms:
        raise GibbonInputError(
            f"this attack is defined for {', '.join(allowed_norms)}, not {norm_name}; pass norm={allowed_norms[0]!r}"
        )
    if eps is not None:
        check_eps(eps)
    bounds = check_attack_inputs(x, y, bounds, target)  # cheap checks first: the probe below needs sane inputs
    classes = count_classes(model, x) if model is not None else None
    if classes is not None:
        check_label_range(classes, y, target)
    return bounds


def input_gradient(model, x_adv: torch.Tensor, labels: torch.Tensor, loss) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradient of the per-sample ``loss(model(x_adv), labels)`` w.r.t. ``x_adv`` only.

    Uses ``torch.autograd.grad`` on a detached copy so no parameter ``.grad`` is filled and the
    caller's tensor keeps its ``requires_grad``. Returns ``(grad, logits, loss_values)``.
    """
    x_var = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_var)
        values = get_loss(loss)(logits, labels)
        (grad,) = torch.autograd.grad(values.sum(), x_var)
    return grad, logits.detach(), values.detach()


def clamp_to_box(x_adv: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    return x_adv.clamp(bounds[0], bounds[1])


def scale(t: torch.Tensor, factor) -> torch.Tensor:
    """``t * factor`` where factor is a float or a per-sample ``[B]`` tensor."""
    if isinstance(factor, torch.Tensor) and factor.ndim == 1:
        return t * factor.to(t.dtype).reshape(-1, *([1] * (t.ndim - 1)))
    return t * factor


def where_samples(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample ``torch.where``: sample i of ``a`` where ``mask[i]`` (a ``[B]`` bool), else of ``b``."""
    return torch.where(mask.reshape(-1, *([1] * (a.ndim - 1))), a, b)


def project_in_box(x: torch.Tensor, delta: torch.Tensor, norm, eps, bounds) -> torch.Tensor:
    """Project ``delta`` onto the eps-ball, then into the box; returns the new ``delta``.

    Clamping after the ball projection keeps both constraints: clamping only shrinks
    coordinates of ``delta`` towards zero, which never leaves an Lp ball.
    """
    return clamp_to_box(x + norm.project(delta, eps), bounds) - x


def least_likely(model, x: torch.Tensor) -> torch.Tensor:
    """The class with the lowest logit on the clean input (Kurakin et al. 2017's target)."""
    with torch.no_grad():
        return model(x).argmin(dim=1)


def resolve_target(target, logits: torch.Tensor, y: torch.Tensor, seed: int):
    """Target labels ``[N]`` (CPU) from None, a class id, ``least-likely``, ``random`` or a tensor."""
    if target is None:
        return None
    classes = logits.shape[1]
    if isinstance(target, str) and target.strip().lstrip("-").isdigit():
        target = int(target)  # a class id from the command line
    if isinstance(target, torch.Tensor):
        t = target.detach().long().cpu().reshape(-1)
        t = t.expand(len(y)).clone() if t.numel() == 1 else t
        if t.shape != y.shape:
            raise GibbonInputError(f"target must hold one label per sample {tuple(y.shape)}, got {tuple(target.shape)}")
    elif target == "least-likely":
        t = logits.argmin(dim=1)
    elif target == "random":
        g = torch.Generator().manual_seed(seed)
        t = (y + torch.randint(1, classes, y.shape, generator=g)) % classes
    elif isinstance(target, int) and not isinstance(target, bool):
        t = torch.full_like(y, target)
    else:
        raise GibbonInputError(f"target must be a class id, 'least-likely', 'random' or a label tensor, got {target!r}")
    if t.numel() and (t.min() < 0 or t.max() >= classes):
        raise GibbonInputError(f"target classes must lie in 0..{classes - 1}")
    return t
