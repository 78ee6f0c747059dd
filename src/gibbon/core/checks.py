"""Input validation shared by attacks and evaluation; every error says what to do."""

from __future__ import annotations

import math

import torch


class GibbonInputError(ValueError):
    """Bad input from a user: the message says what to change."""


def check_bounds(bounds) -> tuple[float, float]:
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise GibbonInputError(f"bounds must be a pair (low, high), got {bounds!r}") from None
    if not lo < hi:
        raise GibbonInputError(f"bounds must satisfy low < high, got {bounds!r}")
    return lo, hi


def check_eps(eps, *, name: str = "eps") -> None:
    values = eps.flatten().tolist() if isinstance(eps, torch.Tensor) else [eps]
    for v in values:
        if v is None or not math.isfinite(float(v)) or float(v) < 0:
            raise GibbonInputError(f"{name} must be a finite number >= 0, got {v!r}")


def check_labels(labels: torch.Tensor, num_classes: int | None, what: str = "labels") -> None:
    """Class indices must lie in ``[0, num_classes)`` (only ``>= 0`` when the count is unknown):
    a label the model cannot output would otherwise count as an unbreakable, robust sample."""
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or (num_classes is not None and high >= num_classes):
        bad = low if low < 0 else high
        index = int(((labels < 0) if low < 0 else (labels >= num_classes)).nonzero()[0])
        span = f"[0, {num_classes})" if num_classes is not None else "[0, classes)"
        raise GibbonInputError(f"{what} must be class indices in {span}, got {bad} at sample {index}; "
                               "check the labels match the model's classes")


def check_label_range(num_classes: int | None, y: torch.Tensor, target=None) -> None:
    """Labels ``y`` and (if given) targets as class indices of a model with ``num_classes`` outputs."""
    check_labels(y, num_classes)
    if target is not None:
        check_labels(target, num_classes, "targets")


def check_finite(x: torch.Tensor, what: str = "x") -> None:
    """NaN or infinite inputs make every attack's arithmetic NaN: refuse them, naming the first."""
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1) if x.ndim else torch.isfinite(x)
    if x.numel() and not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise GibbonInputError(f"{what} holds NaN or infinite values (sample {first} is the first of "
                               f"{int((~finite).sum())}); drop or repair those inputs")


def check_attack_inputs(x: torch.Tensor, y: torch.Tensor, bounds, target=None) -> tuple[float, float]:
    """Validate one attack call's tensors; returns the checked ``(low, high)`` bounds. Labels and
    targets must be >= 0 here; the class count, known only from the model, bounds them in
    :func:`check_label_range`."""
    lo, hi = check_bounds(bounds)
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise GibbonInputError("x must be a floating-point tensor of inputs (N, ...); convert with x.float()")
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32):
        raise GibbonInputError("y must be an integer tensor of class labels (N,); convert with y.long()")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise GibbonInputError(f"y must have shape ({x.shape[0]},) to match x, got {tuple(y.shape)}")
    if target is not None and (not isinstance(target, torch.Tensor) or target.shape != y.shape):
        raise GibbonInputError(f"target must be a label tensor shaped like y {tuple(y.shape)}")
    check_finite(x)
    check_label_range(None, y, target)
    # a little slack: inputs saved as float16/uint8 and converted back can be off by rounding
    slack = 1e-5 * (hi - lo)
    if x.numel() and (x.min().item() < lo - slack or x.max().item() > hi + slack):
        raise GibbonInputError(
            f"inputs span [{x.min().item():.4g}, {x.max().item():.4g}] but bounds are ({lo:g}, {hi:g}); "
            "pass the right bounds, or put the normalization inside the model"
        )
    return lo, hi


def resolve_device(device: str | None) -> str:
    """A command line's ``--device``: None picks cuda when there is one, else cpu; cuda without one is refused."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise GibbonInputError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
    return device


def check_seed_and_batch(seed: int, batch_size: int) -> None:
    if batch_size < 1:
        raise GibbonInputError(f"--batch-size must be >= 1, got {batch_size}")
    if seed < 0:
        raise GibbonInputError(f"--seed must be >= 0, got {seed}")


def parse_number_list(text: str, what: str, *, fractions: bool = False) -> list[float]:
    """A command line's comma list ``"0.1,0.2"``: finite numbers >= 0, or with ``fractions`` in (0, 1]."""
    kind, example = ("fractions", "0.001,0.01,0.1") if fractions else ("numbers", "0.5,1,2")
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise GibbonInputError(f"{what} must be {kind} separated by commas, e.g. {example}; got {text!r}") from None
    if not values:
        raise GibbonInputError(f"{what} needs at least one {kind[:-1]}, e.g. {example.split(',')[1]}")
    for v in values:
        if fractions and not 0 < v <= 1:
            raise GibbonInputError(f"{what} values must be fractions in (0, 1], got {v}; e.g. 0.01 for 1%")
        if not fractions and not (math.isfinite(v) and v >= 0):
            raise GibbonInputError(f"{what} values must be finite numbers >= 0, got {v}")
    return values
