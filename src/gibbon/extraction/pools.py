"""The adversary's query pool for learning-based extraction: images it owns, shaped for the victim.

Orekondy et al. 2019 ("Knockoff Nets", arXiv:1812.02766) query with natural images from
another distribution than the victim's. Offline, the natural images at hand besides MNIST are
scikit-learn's 8x8 digits (1,797 of them): :func:`fit_into` scales them into the victim's frame,
and :func:`augmented` multiplies them with random affine copies (kornia), so a pool of
thousands of distinct images comes from a different data set than the victim's. Uniform noise
(:func:`noise_pool`) is the control a working attack must beat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError


def fit_into(x: torch.Tensor, shape, *, margin: int = 0, bounds=(0.0, 1.0)) -> torch.Tensor:
    """Images ``x`` (N, C, h, w) resized (bilinear) to ``shape`` = (C, H, W) less ``margin`` pixels
    on each side, the margin filled with the box's lower bound (MNIST digits sit in a 20x20 box of
    a 28x28 frame: ``margin=4``). Grey images are repeated over 3 channels, RGB ones averaged to 1."""
    c, h, w = (int(s) for s in shape)
    if x.ndim != 4:
        raise GibbonInputError(f"pool images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if not 0 <= margin < min(h, w) / 2:
        raise GibbonInputError(f"margin must be >= 0 and leave room for the image in {h}x{w}, got {margin}")
    if x.shape[1] != c:
        if x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        elif c == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise GibbonInputError(f"cannot turn {x.shape[1]}-channel pool images into {c}-channel ones")
    inner = F.interpolate(x.float(), size=(h - 2 * margin, w - 2 * margin), mode="bilinear", align_corners=False)
    return F.pad(inner, (margin,) * 4, value=float(bounds[0])).clamp(*bounds)


def augmented(x: torch.Tensor, copies: int, *, seed: int = 0, degrees: float = 15.0, translate: float = 0.1,
              scale=(0.8, 1.2), bounds=(0.0, 1.0)) -> torch.Tensor:
    """``x`` followed by ``copies`` random affine copies of it (rotation, shift, scale; kornia),
    seeded, clipped into ``bounds``: ``(1 + copies) * N`` images."""
    if copies < 0:
        raise GibbonInputError(f"copies must be >= 0, got {copies}")
    import kornia.augmentation as K

    affine = K.RandomAffine(degrees=degrees, translate=(translate, translate), scale=tuple(scale), p=1.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        extra = [affine(x).clamp(*bounds) for _ in range(int(copies))]
    return torch.cat([x, *extra])


def noise_pool(n: int, shape, *, seed: int = 0, bounds=(0.0, 1.0)) -> torch.Tensor:
    """``n`` images uniform in the box: the pool with no information about any data set."""
    gen = torch.Generator().manual_seed(int(seed))
    low, high = float(bounds[0]), float(bounds[1])
    return low + (high - low) * torch.rand((int(n), *(int(s) for s in shape)), generator=gen)


def digits_pool(shape, *, copies: int = 5, margin: int | None = None, seed: int = 0) -> torch.Tensor:
    """All 1,797 scikit-learn digits (every split) fitted into ``shape`` and augmented with
    ``copies`` affine copies: a natural-image pool from another data set than MNIST.
    ``margin`` defaults to MNIST's (4 of 28 pixels), scaled to the frame."""
    from gibbon import data

    x = torch.cat([data.load("digits", split).x for split in ("train", "val", "test")])
    margin = round(4 * int(shape[-1]) / 28) if margin is None else margin
    return augmented(fit_into(x, shape, margin=margin), copies, seed=seed)
