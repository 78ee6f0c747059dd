"""Label-preserving shifts (gibbon.data.augment)."""

from __future__ import annotations

import pytest
import torch
from gibbon.core.checks import GibbonInputError
from gibbon.data.augment import random_shift, shift_objective


def _translated(x: torch.Tensor, dy: int, dx: int, fill: float) -> torch.Tensor:
    """``x`` (C, H, W) moved down by ``dy`` and right by ``dx`` pixels, ``fill`` shifted in."""
    out = torch.full_like(x, fill)
    h, w = x.shape[1:]
    out[:, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = x[:, max(-dy, 0):h + min(-dy, 0),
                                                                      max(-dx, 0):w + min(-dx, 0)]
    return out


def _offset_of(moved: torch.Tensor, original: torch.Tensor, max_shift: int, fill: float):
    """The (dy, dx) that turns ``original`` into ``moved``, or None if no shift does."""
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            if torch.equal(moved, _translated(original, dy, dx, fill)):
                return dy, dx
    return None


def test_each_image_is_itself_moved_by_at_most_the_shift_with_the_fill_shifted_in():
    x = torch.rand(400, 2, 7, 6) + 1.0  # never equal to the fill: every pixel tells where it came from
    moved = random_shift(x, 2, fill=-1.0, generator=torch.Generator().manual_seed(0))
    assert moved.shape == x.shape and moved.dtype == x.dtype
    offsets = [_offset_of(m, o, 2, -1.0) for m, o in zip(moved, x)]
    assert None not in offsets  # a broken index (channels mixed, images swapped, pixels lost) finds no shift
    assert set(offsets) == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}  # all 25, drawn per image
    assert (0, 0) in offsets and sum(o == (0, 0) for o in offsets) < 60  # not a no-op: about 1 in 25 stays put


def test_the_same_generator_state_gives_the_same_shifts_and_zero_is_the_identity():
    x = torch.rand(8, 1, 5, 5)
    first = random_shift(x, 1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, random_shift(x, 1, generator=torch.Generator().manual_seed(3)))
    assert random_shift(x, 0) is x


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2", None])
def test_a_bad_shift_says_what_it_must_be(bad):
    with pytest.raises(GibbonInputError, match="whole number of pixels >= 0"):
        random_shift(torch.rand(2, 1, 4, 4), bad)
    with pytest.raises(GibbonInputError, match="whole number of pixels >= 0"):
        shift_objective(bad)


def test_shifts_need_images():
    with pytest.raises(GibbonInputError, match=r"needs images \(N, C, H, W\)"):
        random_shift(torch.rand(5, 16), 1)


def test_the_objective_trains_on_shifted_copies_with_the_same_labels():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            seen.append(x)
            return x.flatten(1)[:, :3] * 0.0

    x, y = torch.rand(64, 1, 6, 6) + 1.0, torch.arange(64) % 3
    loss, logits = shift_objective(1, fill=0.0)(Spy(), x, y)
    assert logits.shape == (64, 3) and torch.isclose(loss, torch.log(torch.tensor(3.0)))
    (shown,) = seen
    assert not torch.equal(shown, x)  # the model sees the copies, not the originals
    assert all(_offset_of(s, o, 1, 0.0) is not None for s, o in zip(shown, x))
