"""Backdoor triggers: a pixel patch (Gu, Dolan-Gavitt & Garg 2017, "BadNets: Identifying
Vulnerabilities in the Machine Learning Model Supply Chain", arXiv:1708.06733) or a blended
pattern (Chen, Liu, Li, Lu & Song 2017, "Targeted Backdoor Attacks on Deep Learning Systems Using
Data Poisoning", arXiv:1712.05526).

A trigger is a mask ``m`` and a pattern ``p`` of the image's shape; stamping it is
``(1 - m) * x + m * p``. A patch has ``m = 1`` on a small square and the pattern there; a blend
has ``m = alpha`` everywhere and a fixed random pattern (Chen et al.'s "blended injection").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.core.checks import GibbonInputError

KINDS = ("patch", "blend")
PATTERNS = ("checkerboard", "solid", "noise")
CORNERS = ("bottom-right", "bottom-left", "top-right", "top-left")


@dataclass(frozen=True)
class Trigger:
    """What to stamp on an image.

    Attributes:
        kind: ``"patch"`` (BadNets) or ``"blend"`` (Chen et al.).
        size: side of the square patch in pixels (patch only).
        location: a corner name (:data:`CORNERS`) or ``(row, col)`` of the patch's top-left pixel.
        margin: pixels between the patch and the image border when placed at a corner.
        pattern: ``"checkerboard"`` (alternating high/low, BadNets' pattern-like trigger),
            ``"solid"`` (all high) or ``"noise"`` (uniform in the box, fixed by ``seed``).
        alpha: the blend's opacity in (0, 1] (blend only; Chen et al. use 0.2 for training).
        seed: fixes the ``"noise"`` pattern, so the same trigger is stamped at train and test time.
    """

    kind: str = "patch"
    size: int = 4
    location: str | tuple[int, int] = "bottom-right"
    margin: int = 1
    pattern: str = "checkerboard"
    alpha: float = 0.2
    seed: int = 0

    def to_dict(self) -> dict:
        return {"kind": self.kind, "size": self.size, "location": self.location, "margin": self.margin,
                "pattern": self.pattern, "alpha": self.alpha, "seed": self.seed}


def _pattern(trigger: Trigger, shape, bounds) -> torch.Tensor:
    lo, hi = bounds
    c, h, w = shape
    if trigger.pattern == "solid":
        return torch.full(shape, hi)
    if trigger.pattern == "checkerboard":
        rows, cols = torch.arange(h).view(-1, 1), torch.arange(w).view(1, -1)
        board = ((rows + cols) % 2 == 0).float().expand(c, h, w)
        return lo + (hi - lo) * board
    g = torch.Generator().manual_seed(trigger.seed)
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _top_left(trigger: Trigger, h: int, w: int) -> tuple[int, int]:
    s, m = trigger.size, trigger.margin
    if isinstance(trigger.location, str):
        row = m if trigger.location.startswith("top") else h - s - m
        col = m if trigger.location.endswith("left") else w - s - m
        return row, col
    return int(trigger.location[0]), int(trigger.location[1])


def check_trigger(trigger: Trigger, shape) -> None:
    """Refuse a trigger that cannot be stamped on images of ``shape`` ``(C, H, W)``."""
    if trigger.kind not in KINDS:
        raise GibbonInputError(f"trigger kind must be one of {', '.join(KINDS)}, got {trigger.kind!r}")
    if trigger.pattern not in PATTERNS:
        raise GibbonInputError(f"trigger pattern must be one of {', '.join(PATTERNS)}, got {trigger.pattern!r}")
    if trigger.kind == "blend":
        if not 0 < trigger.alpha <= 1:
            raise GibbonInputError(f"blend alpha must be in (0, 1], got {trigger.alpha}; 0.2 is Chen et al.'s")
        return
    _, h, w = shape
    if int(trigger.size) != trigger.size or trigger.size < 1:
        raise GibbonInputError(f"trigger size must be a whole number of pixels >= 1, got {trigger.size!r}")
    if isinstance(trigger.location, str) and trigger.location not in CORNERS:
        raise GibbonInputError(f"trigger location must be one of {', '.join(CORNERS)} or (row, col), "
                               f"got {trigger.location!r}")
    if trigger.margin < 0:
        raise GibbonInputError(f"trigger margin must be >= 0, got {trigger.margin}")
    row, col = _top_left(trigger, h, w)
    if row < 0 or col < 0 or row + trigger.size > h or col + trigger.size > w:
        raise GibbonInputError(f"a {trigger.size}x{trigger.size} trigger at {trigger.location} (margin "
                               f"{trigger.margin}) does not fit a {h}x{w} image; use a smaller --trigger-size")


def trigger_mask_and_pattern(trigger: Trigger, shape, bounds=(0.0, 1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, pattern)``, both of ``shape`` ``(C, H, W)``, float32."""
    shape = tuple(int(s) for s in shape)
    check_trigger(trigger, shape)
    pattern = _pattern(trigger, shape, bounds).float()
    if trigger.kind == "blend":
        return torch.full(shape, float(trigger.alpha)), pattern
    mask = torch.zeros(shape)
    row, col = _top_left(trigger, shape[1], shape[2])
    mask[:, row:row + trigger.size, col:col + trigger.size] = 1.0
    return mask, pattern


def apply_trigger(x: torch.Tensor, trigger: Trigger, bounds=(0.0, 1.0)) -> torch.Tensor:
    """Stamp ``trigger`` on every image of the batch ``x`` ``(B, C, H, W)``; returns a new tensor."""
    if x.ndim != 4:
        raise GibbonInputError(f"images must be (B, C, H, W), got shape {tuple(x.shape)}")
    mask, pattern = trigger_mask_and_pattern(trigger, x.shape[1:], bounds)
    mask, pattern = mask.to(x.device, x.dtype), pattern.to(x.device, x.dtype)
    return (1 - mask) * x + mask * pattern


def parse_trigger(spec: str) -> Trigger:
    """``"patch"``, ``"patch:size=4,pattern=solid"``, ``"blend:alpha=0.1"`` -> :class:`Trigger`."""
    kind, _, rest = spec.partition(":")
    fields: dict = {"kind": kind.strip()}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise GibbonInputError(f"trigger option {item!r} must be KEY=VALUE, e.g. size=4")
        key = key.strip()
        if key in ("size", "margin", "seed"):
            fields[key] = _number(key, value, int)
        elif key == "alpha":
            fields[key] = _number(key, value, float)
        elif key in ("pattern", "location"):
            fields[key] = value.strip()
        else:
            raise GibbonInputError(f"unknown trigger option {key!r}; use size, location, margin, pattern, "
                                   "alpha or seed")
    trigger = Trigger(**fields)
    if trigger.kind not in KINDS:
        raise GibbonInputError(f"trigger kind must be one of {', '.join(KINDS)}, got {trigger.kind!r}")
    return trigger


def _number(key: str, value: str, kind):
    try:
        return kind(value)
    except ValueError:
        raise GibbonInputError(f"trigger option {key} must be a number, got {value!r}") from None
