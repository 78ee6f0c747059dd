"""Label-preserving image augmentation for training on few labels.

A digit moved by a pixel or two is the same digit. Training on randomly shifted copies of its
labelled images teaches a model that prior for free: no new labels are needed. That matters
where labels are what costs, as for Papernot et al.'s substitute, which pays an oracle query
for each of its training points (:func:`gibbon.transfer.train_substitute`, ``shift=``).

The same translations are the classic augmentation for small-data digit recognition (Simard,
Steinkraus & Platt 2003, "Best Practices for Convolutional Neural Networks Applied to Visual
Document Analysis", ICDAR; no arXiv id).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError


def check_shift(max_shift) -> int:
    """``max_shift`` as an int, or a :class:`GibbonInputError` saying what it must be."""
    try:
        whole = not isinstance(max_shift, bool) and int(max_shift) == max_shift and max_shift >= 0
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise GibbonInputError(f"shift must be a whole number of pixels >= 0 (0: no shifts), got {max_shift!r}")
    return int(max_shift)


def random_shift(x: torch.Tensor, max_shift: int, *, fill: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image of ``x`` by its own random whole-pixel offset.

    Args:
        x: images ``(N, C, H, W)``.
        max_shift: the largest shift in pixels, drawn uniformly from ``-max_shift..max_shift``
            on each axis, independently per image (0 returns ``x``).
        fill: the value of the pixels shifted in from outside (the background: 0 for MNIST).
        generator: the offsets' randomness; default the global RNG.

    Returns:
        A tensor like ``x``; every pixel is either a pixel of the same image or ``fill``.

    Example:
        >>> x = torch.ones(4, 1, 5, 5)
        >>> moved = random_shift(x, 2, generator=torch.Generator().manual_seed(0))
        >>> moved.shape, bool(((moved == 0) | (moved == 1)).all())
        (torch.Size([4, 1, 5, 5]), True)
    """
    max_shift = check_shift(max_shift)
    if x.dim() != 4:
        raise GibbonInputError(f"random_shift needs images (N, C, H, W), got shape {tuple(x.shape)}")
    if max_shift == 0 or len(x) == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=fill)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator,
                            device="cpu" if generator is None else generator.device).to(x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (N, H): the window each image keeps
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)
    return padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[:, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def shift_objective(max_shift: int, *, fill: float = 0.0):
    """Cross-entropy at randomly shifted copies of each batch, for :func:`gibbon.zoo.fit`.

    The offsets come from the global RNG, which :func:`gibbon.zoo.fit` seeds inside
    ``fork_rng``: training stays reproducible and the caller's RNG untouched.

    Returns:
        ``objective(model, x, y) -> (loss, logits)``, the logits being those at the shifted images.
    """
    max_shift = check_shift(max_shift)

    def objective(model, x: torch.Tensor, y: torch.Tensor):
        logits = model(random_shift(x, max_shift, fill=fill))
        return F.cross_entropy(logits, y), logits

    objective.__qualname__ = f"shift_objective(max_shift={max_shift}, fill={fill})"
    return objective
