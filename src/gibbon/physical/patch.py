"""Adversarial patch (Brown, Mané, Roy, Abadi & Gilmer 2017, "Adversarial Patch", arXiv:1712.09665).

A universal, targeted patch: pasted anywhere on any image, at a random rotation and scale, it
makes the model answer the target class. Trained with expectation over transformation (Athalye
et al. 2018, arXiv:1707.07397): every step pastes the patch on a batch of images, each at its own
random location, angle and scale (one affine warp per image, kornia's ``warp_affine``), and takes
an Adam step on the mean targeted cross-entropy. The patch stays in the valid box.

Size is the patch's share of the image area (Brown et al. report success against the share).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError, check_bounds
from gibbon.zoo.training import model_device


@dataclass(frozen=True)
class PatchResult:
    """A trained patch: ``patch`` ``(C, S, S)`` in the box, its area share, the target, the loss curve."""

    patch: torch.Tensor
    area: float
    target: int
    losses: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"area": self.area, "target": self.target, "side": int(self.patch.shape[-1]), "losses": self.losses}


def patch_side(area: float, image_shape) -> int:
    """The side in pixels of a square covering ``area`` of a ``(C, H, W)`` image; refuses one that cannot fit."""
    _, h, w = image_shape
    if not 0 < area <= 1:
        raise GibbonInputError(f"patch area must be a share of the image in (0, 1], got {area}; e.g. 0.1 for 10%")
    side = max(1, round(math.sqrt(area * h * w)))
    if side > min(h, w):
        raise GibbonInputError(f"a patch of {100 * area:g}% of the area ({side}x{side} pixels) is larger than the "
                               f"{h}x{w} image; use a smaller area")
    return side


def random_placements(n: int, side: int, image_shape, *, max_angle: float, scale: tuple, generator) -> torch.Tensor:
    """``(n, 2, 3)`` affine maps from patch pixels to image pixels: rotation, scale, and a position
    chosen so the whole (scaled) patch stays inside the image."""
    _, h, w = image_shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(max_angle)
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=generator)
    reach = side * s * (abs(torch.cos(angle)) + abs(torch.sin(angle))) / 2  # half the rotated patch's extent
    cx = reach + torch.rand(n, generator=generator) * (w - 2 * reach).clamp_min(0)
    cy = reach + torch.rand(n, generator=generator) * (h - 2 * reach).clamp_min(0)
    cos, sin, c = s * torch.cos(angle), s * torch.sin(angle), (side - 1) / 2
    # image = R*S*(p - c) + centre
    return torch.stack([torch.stack([cos, -sin, cx - cos * c + sin * c], 1),
                        torch.stack([sin, cos, cy - sin * c - cos * c], 1)], 1)


def paste(x: torch.Tensor, patch: torch.Tensor, placements: torch.Tensor) -> torch.Tensor:
    """Paste ``patch`` on each image of ``x`` with its own affine placement (differentiable in the patch)."""
    from kornia.geometry.transform import warp_affine

    b, _, h, w = x.shape
    m = placements.to(x.device, x.dtype)
    canvas = warp_affine(patch.unsqueeze(0).expand(b, -1, -1, -1), m, dsize=(h, w), align_corners=False)
    mask = warp_affine(torch.ones_like(patch[:1]).unsqueeze(0).expand(b, -1, -1, -1), m, dsize=(h, w),
                       align_corners=False)
    return (1 - mask) * x + mask * canvas


def train_patch(model, x: torch.Tensor, target: int, *, area: float, epochs: int = 3, batch_size: int = 100,
                lr: float = 0.05, max_angle: float = 20.0, scale=(0.8, 1.2), bounds=(0.0, 1.0),
                seed: int = 0) -> PatchResult:
    """Train a targeted patch on the images ``x`` (Brown et al.'s EOT over location, rotation, scale)."""
    lo, hi = check_bounds(bounds)
    if x.ndim != 4 or len(x) == 0:
        raise GibbonInputError(f"x must be a non-empty (N, C, H, W) batch, got shape {tuple(x.shape)}")
    side = patch_side(area, x.shape[1:])
    g = torch.Generator().manual_seed(int(seed))
    device = model_device(model)
    patch = (lo + (hi - lo) * torch.rand(x.shape[1], side, side, generator=g)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([patch], lr=lr)
    was_training = model.training
    model.eval()
    losses = []
    try:
        for _ in range(int(epochs)):
            order, total = torch.randperm(len(x), generator=g), 0.0
            for start in range(0, len(x), batch_size):
                xb = x[order[start:start + batch_size]].to(device)
                where = random_placements(len(xb), side, x.shape[1:], max_angle=max_angle, scale=scale, generator=g)
                logits = model(paste(xb, patch, where))
                loss = F.cross_entropy(logits, torch.full((len(xb),), int(target), device=device))
                opt.zero_grad()
                (grad,) = torch.autograd.grad(loss, patch)
                patch.grad = grad
                opt.step()
                with torch.no_grad():
                    patch.clamp_(lo, hi)
                total += float(loss.detach()) * len(xb)
            losses.append(total / len(x))
    finally:
        model.train(was_training)
    return PatchResult(patch.detach().cpu(), float(area), int(target), losses)


@torch.no_grad()
def patch_success(model, x: torch.Tensor, y: torch.Tensor, result: PatchResult, *, draws: int = 4,
                  max_angle: float = 20.0, scale=(0.8, 1.2), seed: int = 1) -> float:
    """Targeted success: share of (image, random placement) pairs, over non-target images, labelled the target."""
    keep = y != result.target
    if not bool(keep.any()):
        raise GibbonInputError(f"every image is of the target class {result.target}")
    x = x[keep]
    g = torch.Generator().manual_seed(int(seed))
    device = model_device(model)
    side, hits = int(result.patch.shape[-1]), 0
    for _ in range(int(draws)):
        for start in range(0, len(x), 500):
            xb = x[start:start + 500].to(device)
            where = random_placements(len(xb), side, x.shape[1:], max_angle=max_angle, scale=scale, generator=g)
            hits += int((model(paste(xb, result.patch.to(device), where)).argmax(-1) == result.target).sum())
    return hits / (len(x) * int(draws))
