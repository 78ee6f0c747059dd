"""Input transformations (Xu et al. 2018, Guo et al. 2018, Xie et al. 2018) as model wrappers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gibbon.core.checks import GibbonInputError
import torch.nn.functional as F

from gibbon.defenses.transforms import (BitDepthReduction, InputTransformed, JpegCompression, MedianSmoothing,
                                        RandomResizePad, resize_and_pad)


def _images(b=4, c=1, h=16, w=16, seed=0):
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bits", [1, 2, 3])
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 2.0)])
def test_bit_depth_takes_exactly_two_to_the_bits_values(bits, bounds):
    low, high = bounds
    x = torch.linspace(low, high, 1001).reshape(1, 1, 7, 143)
    out = BitDepthReduction(bits, bounds=bounds)(x)
    values = out.unique()
    assert len(values) == 2 ** bits, f"{len(values)} distinct values for {bits} bits: {values.tolist()}"
    expected = torch.linspace(low, high, 2 ** bits)
    assert torch.allclose(values, expected, atol=1e-6), (values, expected)
    assert float((out - x).abs().max()) <= (high - low) / (2 ** bits - 1) / 2 + 1e-6  # nearest level


def test_bit_depth_gradient_is_zero():
    x = _images().requires_grad_(True)
    (grad,) = torch.autograd.grad((BitDepthReduction(2)(x) * torch.randn_like(x)).sum(), x)
    assert float(grad.abs().max()) == 0.0


def test_median_matches_a_naive_reference_and_removes_salt():
    x = _images(b=2, c=2, h=7, w=9)
    for k in (2, 3):
        out = MedianSmoothing(k)(x)
        before, after = (k - 1) // 2, k // 2
        padded = np.pad(x.numpy(), ((0, 0), (0, 0), (before, after), (before, after)), mode="edge")
        ref = np.empty(x.shape, dtype=np.float32)
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                window = np.sort(padded[:, :, i:i + k, j:j + k].reshape(2, 2, -1), axis=-1)
                ref[:, :, i, j] = window[..., (k * k - 1) // 2]  # the lower median, as torch.median
        assert torch.equal(out, torch.from_numpy(ref)), f"kernel {k}"
    salted = torch.zeros(1, 1, 6, 6)
    salted[0, 0, 2, 3] = 1.0
    assert float(MedianSmoothing(3)(salted).max()) == 0.0


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_changes_the_image_and_keeps_shape_dtype_range(channels):
    x = _images(b=3, c=channels, h=16, w=16).double()
    state = torch.get_rng_state()
    out = JpegCompression(quality=30)(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((out - x).abs().mean()) > 0.02, "JPEG at quality 30 left random noise intact"
    grid = torch.arange(32.0)
    disk = ((grid[:, None] - 15.3) ** 2 + (grid[None, :] - 16.7) ** 2 < 100).float()  # edges cross the 8x8 blocks
    x_big = disk.expand(1, channels, 32, 32)
    errors = [float((JpegCompression(quality=q)(x_big) - x_big).abs().mean()) for q in (10, 95)]
    assert errors[1] < errors[0], f"higher quality should be closer to the input: {errors}"


def test_jpeg_respects_other_bounds_and_has_a_zero_gradient():
    x = (_images(b=2, c=1) * 2 - 1).requires_grad_(True)
    out = JpegCompression(quality=50, bounds=(-1.0, 1.0))(x)
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert float(grad.abs().max()) == 0.0
    out = out.detach()
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    assert float((out - x.detach()).abs().mean()) < 0.3  # decoded in the same box, not in [0, 1]


def test_random_resize_pad_geometry():
    x = torch.ones(200, 1, 28, 28)
    out = RandomResizePad(max_extra=4, seed=0)(x)
    assert out.shape == x.shape
    covered = out.mean(dim=(1, 2, 3))  # the resized image's area over the canvas's area
    assert float(covered.min()) >= (28 / 32) ** 2 - 0.03 and float(covered.max()) <= 1.0 + 1e-6
    assert len(torch.unique((covered * 1000).round())) > 5, "layouts are not drawn per sample"
    assert float(out.min()) >= 0.0 and float((out == 0).float().mean()) > 0.02  # zero padding shows
    # same seed, same layouts; the global RNG is never used
    state = torch.get_rng_state()
    again = RandomResizePad(max_extra=4, seed=0)(x)
    assert torch.equal(out, again) and torch.equal(torch.get_rng_state(), state)


def _literal_resize_pad(x, extra, top, left, max_extra):
    """Xie et al.'s steps one by one: resize, paste on a zero canvas, resize the canvas back."""
    h, w = x.shape[2:]
    resized = F.interpolate(x, size=(h + extra, w + extra), mode="bilinear", align_corners=False)
    canvas = torch.zeros(*x.shape[:2], h + max_extra, w + max_extra)
    canvas[..., top:top + h + extra, left:left + w + extra] = resized
    return F.interpolate(canvas, size=(h, w), mode="bilinear", align_corners=False)


def test_resize_and_pad_has_the_geometry_of_the_literal_pipeline():
    grid = torch.arange(28.0)
    blob = torch.exp(-((grid[:, None] - 11.0) ** 2 + (grid[None, :] - 16.0) ** 2) / 30).expand(1, 1, 28, 28)
    for extra, top, left in ((0, 1, 3), (0, 4, 0), (2, 0, 2), (3, 1, 0), (1, 3, 2)):
        ours = resize_and_pad(blob, torch.tensor([extra]), torch.tensor([top]), torch.tensor([left]), max_extra=4)
        literal = _literal_resize_pad(blob, extra, top, left, 4)
        error = float((ours - literal).abs().mean())
        off_by_a_pixel = float((torch.roll(literal, 1, dims=3) - literal).abs().mean())
        if extra == 0:  # the first resize is the identity: the same single interpolation
            assert torch.allclose(ours, literal, atol=1e-5), (extra, top, left, error)
        assert error < 0.3 * off_by_a_pixel, f"layout {(extra, top, left)}: error {error:.4f}, 1 px {off_by_a_pixel:.4f}"


def test_random_resize_pad_is_differentiable_and_close_to_identity_without_room():
    x = _images(b=8, h=12, w=12).requires_grad_(True)
    t = RandomResizePad(max_extra=1, seed=3)
    (grad,) = torch.autograd.grad(t(x).sum(), x)
    assert float(grad.abs().sum()) > 0
    # an extra of max_extra fills the whole canvas: the identity layout (drawn with probability 1/2)
    out = t(x).detach()
    unchanged = ((out - x.detach()).abs().flatten(1).max(dim=1).values < 1e-5).sum()
    assert 0 < int(unchanged) < 8, f"{int(unchanged)} of 8 samples unchanged (expected about half)"


def test_input_transformed_is_model_of_transform():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 3))
    x = _images()
    assert torch.equal(InputTransformed(MedianSmoothing(3), net)(x), net(MedianSmoothing(3)(x)))


@pytest.mark.parametrize("make", [lambda: BitDepthReduction(0), lambda: MedianSmoothing(0),
                                  lambda: JpegCompression(quality=0), lambda: RandomResizePad(0),
                                  lambda: InputTransformed(None, torch.nn.Identity())])
def test_bad_arguments_say_what_to_do(make):
    with pytest.raises(GibbonInputError):
        make()


def test_jpeg_refuses_two_channels_and_flat_inputs():
    with pytest.raises(GibbonInputError, match="1- or 3-channel"):
        JpegCompression()(torch.rand(1, 2, 8, 8))
    with pytest.raises(GibbonInputError, match="reshape"):
        MedianSmoothing()(torch.rand(3, 64))
