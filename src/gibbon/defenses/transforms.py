"""Input-transformation defenses as model wrappers: the model sees ``transform(x)``, not ``x``.

* :class:`BitDepthReduction` and :class:`MedianSmoothing`: "feature squeezing" (Xu, Evans & Qi
  2018, arXiv:1704.01155; 1-bit depth on MNIST, 2x2 median filters).
* :class:`JpegCompression`: JPEG re-encoding of every image (Dziugaite, Ghahramani & Roy 2016,
  arXiv:1608.00853; Guo, Rana, Cisse & van der Maaten 2018, arXiv:1711.00117), with Pillow.
* :class:`RandomResizePad`: random resizing and padding (Xie, Wang, Zhang, Ren & Yuille 2018,
  arXiv:1711.01991).

Wrap a model with :class:`InputTransformed`. These defenses block gradients rather than remove
adversarial examples (Athalye, Carlini & Wagner 2018, arXiv:1802.00420): rounding and JPEG have
a zero gradient almost everywhere, so plain PGD stalls; :class:`gibbon.defenses.bpda.BPDA`
restores a useful gradient. :class:`RandomResizePad` is differentiable but random;
:class:`gibbon.defenses.eot.EOT` averages over its randomness. The non-differentiable
transforms stay in the autograd graph with a zero gradient, so an attack runs (and fails)
instead of raising, and the gradient-masking diagnostics can see what happened.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gibbon.core.checks import GibbonInputError, check_bounds


def _zero_gradient(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``value`` (exactly) in the forward pass, a zero gradient w.r.t. ``x`` in the backward one."""
    return value.detach() + x * 0 if x.requires_grad else value.detach()


def _check_images(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise GibbonInputError(f"{name} takes float images (B, C, H, W), got {shape}; reshape flat inputs first")


class BitDepthReduction(nn.Module):
    """Quantize every value to ``2**bits`` evenly spaced levels of ``bounds`` (Xu et al. 2018).

    ``low + round((x - low) / (high - low) * (2**bits - 1)) / (2**bits - 1) * (high - low)``.
    Its autograd gradient is zero wherever it is defined: the textbook masked gradient.

    Example:
        >>> BitDepthReduction(1)(torch.tensor([[[[0.2, 0.7]]]]))
        tensor([[[[0., 1.]]]])
    """

    def __init__(self, bits: int, bounds=(0.0, 1.0)):
        super().__init__()
        if isinstance(bits, bool) or int(bits) != bits or not 1 <= bits <= 16:
            raise GibbonInputError(f"bits must be a whole number in 1..16, got {bits!r} (Xu et al.: 1 on MNIST)")
        self.bits, self.bounds = int(bits), check_bounds(bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.bounds
        levels = 2 ** self.bits - 1
        unit = ((x - low) / (high - low)).clamp(0.0, 1.0)
        return torch.round(unit * levels) / levels * (high - low) + low

    def extra_repr(self) -> str:
        return f"bits={self.bits}, bounds={self.bounds}"


class MedianSmoothing(nn.Module):
    """Median of every ``kernel_size x kernel_size`` window, per channel (Xu et al. 2018).

    Edges are replicated; an even window covers one more pixel below/right of its centre than
    above/left. The (lower) median passes its gradient to the selected pixel only.

    Example:
        >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 2, 2] = 1.0  # one salt pixel
        >>> float(MedianSmoothing(3)(x).max())
        0.0
    """

    def __init__(self, kernel_size: int = 2):
        super().__init__()
        if isinstance(kernel_size, bool) or int(kernel_size) != kernel_size or kernel_size < 1:
            raise GibbonInputError(f"kernel_size must be a whole number >= 1, got {kernel_size!r} (Xu et al.: 2)")
        self.kernel_size = int(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "MedianSmoothing")
        k = self.kernel_size
        before, after = (k - 1) // 2, k // 2
        padded = F.pad(x, (before, after, before, after), mode="replicate")
        windows = padded.unfold(2, k, 1).unfold(3, k, 1)  # (B, C, H, W, k, k)
        return windows.reshape(*x.shape, k * k).median(dim=-1).values

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class JpegCompression(nn.Module):
    """JPEG encode and decode every image at ``quality`` with Pillow (1 or 3 channels).

    Values are scaled from ``bounds`` to 8 bits and back. The gradient is zero: on 8-bit images
    the transform is piecewise constant. Pass the model through ``BPDA`` to attack it.

    Example:
        >>> x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        >>> out = JpegCompression(quality=50)(x)
        >>> out.shape, bool((out != x).any())
        (torch.Size([2, 1, 8, 8]), True)
    """

    def __init__(self, quality: int = 75, bounds=(0.0, 1.0)):
        super().__init__()
        if isinstance(quality, bool) or int(quality) != quality or not 1 <= quality <= 100:
            raise GibbonInputError(f"quality must be a whole number in 1..100, got {quality!r} (Guo et al.: 75)")
        self.quality, self.bounds = int(quality), check_bounds(bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        _check_images(x, "JpegCompression")
        if x.shape[1] not in (1, 3):
            raise GibbonInputError(f"JPEG encodes 1- or 3-channel images, got {x.shape[1]} channels")
        low, high = self.bounds
        unit = ((x.detach() - low) / (high - low)).clamp(0.0, 1.0)
        pixels = (unit * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        decoded = []
        for image in pixels:  # Pillow encodes one image at a time
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
                buffer, format="JPEG", quality=self.quality)
            decoded.append(np.asarray(Image.open(buffer)).reshape(image.shape))
        out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype)
        return _zero_gradient(out / 255 * (high - low) + low, x)

    def extra_repr(self) -> str:
        return f"quality={self.quality}, bounds={self.bounds}"


class RandomResizePad(nn.Module):
    """Xie et al.'s random resizing and padding, resampled back to the input size.

    Per image: a size ``H + e`` (``e`` uniform in ``0..max_extra``), the image resized to it,
    placed at a uniform random integer offset on a ``fill`` canvas of ``H + max_extra`` (their
    ImageNet setting: 299 -> 299..330 on 331), and the canvas resized back to ``H x W`` so the
    model keeps its input size (wider inputs work likewise). The two bilinear resizes are one
    affine ``grid_sample`` (the same geometry, one interpolation); it is differentiable.
    Every call draws a fresh, independent layout *per sample* from the module's own generator
    (never the global RNG), so repeated copies of one image (as :class:`EOT` makes) differ.

    Example:
        >>> t = RandomResizePad(max_extra=4, seed=0)
        >>> x = torch.rand(3, 1, 28, 28)
        >>> t(x).shape, bool((t(x) != t(x)).any())
        (torch.Size([3, 1, 28, 28]), True)
    """

    def __init__(self, max_extra: int = 4, *, fill: float = 0.0, seed: int = 0):
        super().__init__()
        if isinstance(max_extra, bool) or int(max_extra) != max_extra or max_extra < 1:
            raise GibbonInputError(f"max_extra must be a whole number >= 1, got {max_extra!r} (about H / 9)")
        self.max_extra, self.fill = int(max_extra), float(fill)
        self.generator = torch.Generator().manual_seed(int(seed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_images(x, "RandomResizePad")
        b, k, g = x.shape[0], self.max_extra, self.generator
        extra = torch.randint(0, k + 1, (b,), generator=g)
        top = (torch.rand(b, generator=g) * (k - extra + 1)).floor().long()
        left = (torch.rand(b, generator=g) * (k - extra + 1)).floor().long()
        return resize_and_pad(x, extra, top, left, max_extra=k, fill=self.fill)

    def extra_repr(self) -> str:
        return f"max_extra={self.max_extra}, fill={self.fill}"


def resize_and_pad(x: torch.Tensor, extra, top, left, *, max_extra: int, fill: float = 0.0) -> torch.Tensor:
    """One layout per image of :class:`RandomResizePad`: resize to ``(H + extra, W + extra)``, put
    it at ``(top, left)`` on a ``fill`` canvas of ``(H + max_extra, W + max_extra)``, resize back.

    Args:
        x: images ``(B, C, H, W)``. extra, top, left: integer tensors ``(B,)`` with
            ``0 <= extra <= max_extra`` and ``0 <= top, left <= max_extra - extra``.

    Returns:
        ``(B, C, H, W)``, from one bilinear ``grid_sample`` (differentiable in ``x``).
    """
    b, _, h, w = x.shape
    k = int(max_extra)
    extra, top, left = (torch.as_tensor(v, dtype=torch.float64).expand(b) for v in (extra, top, left))
    # output coordinate u in [-1, 1] (canvas P) -> v = (P / s) u + (P - 2 offset) / s - 1 (image of size s)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = (w + k) / (w + extra)
    theta[:, 0, 2] = (w + k - 2 * left) / (w + extra) - 1
    theta[:, 1, 1] = (h + k) / (h + extra)
    theta[:, 1, 2] = (h + k - 2 * top) / (h + extra) - 1
    grid = F.affine_grid(theta.to(device=x.device, dtype=x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


class InputTransformed(nn.Module):
    """The defended model ``model(transform(x))``: attacks see one model (principle 4).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> InputTransformed(BitDepthReduction(1), net)(torch.rand(2, 1, 2, 2)).shape
        torch.Size([2, 3])
    """

    def __init__(self, transform, model):
        super().__init__()
        if not callable(transform) or not callable(model):
            raise GibbonInputError("InputTransformed(transform, model) needs two callables x -> tensor")
        self.transform, self.model = transform, model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.transform(x))
