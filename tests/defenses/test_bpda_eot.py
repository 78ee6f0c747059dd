"""BPDA and EOT (Athalye et al. 2018) as model wrappers, on real digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _helpers import digits_mlp, fit_full_batch

from gibbon.attacks import PGD
from gibbon.core.checks import GibbonInputError
from gibbon.defenses.bpda import BPDA, straight_through
from gibbon.defenses.eot import EOT
from gibbon.defenses.transforms import BitDepthReduction, InputTransformed, JpegCompression, RandomResizePad


@pytest.fixture(scope="module")
def natural(digits_sets):
    train, _ = digits_sets
    return fit_full_batch(digits_mlp(), train.x, train.y, steps=150)


@pytest.fixture(scope="module")
def resize_pad_model(digits_sets):
    """An MLP trained on randomly resized-and-padded digits (Xie et al.'s defense, trained with it)."""
    train, _ = digits_sets
    net = digits_mlp()
    defended = InputTransformed(RandomResizePad(max_extra=2, seed=1), net)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(defended(train.x), train.y).backward()
        opt.step()
    net.eval().requires_grad_(False)
    return defended


def _accuracy(model, x, y, draws=1):
    with torch.no_grad():
        return sum(float((model(x).argmax(1) == y).float().mean()) for _ in range(draws)) / draws


def _grad(model, x, y):
    x = x.clone().requires_grad_(True)
    out = model(x)
    return torch.autograd.grad(F.nll_loss(out.log_softmax(1), y, reduction="sum"), x)[0]


def test_bpda_gradient_is_the_models_gradient_at_the_transformed_point(natural, digits_sets):
    _, test = digits_sets
    x, y = test.x[:64], test.y[:64]
    defended = InputTransformed(BitDepthReduction(2), natural)
    assert float(_grad(defended, x, y).abs().max()) == 0.0, "plain autograd through rounding should be zero"
    through = _grad(BPDA(defended), x, y)
    at_transformed = _grad(natural, BitDepthReduction(2)(x), y)
    assert float(through.abs().sum()) > 0
    assert torch.allclose(through, at_transformed, atol=1e-6), float((through - at_transformed).abs().max())
    with torch.no_grad():
        assert torch.equal(BPDA(defended)(x), defended(x)), "BPDA must not change the forward pass"


def test_bpda_through_jpeg_and_with_a_surrogate(natural, digits_sets):
    _, test = digits_sets
    x, y = test.x[:16], test.y[:16]
    jpeg = InputTransformed(JpegCompression(quality=40), natural)
    assert float(_grad(jpeg, x, y).abs().max()) == 0.0
    assert torch.allclose(_grad(BPDA(jpeg), x, y), _grad(natural, JpegCompression(quality=40)(x), y), atol=1e-6)
    # a user surrogate g: the gradient is g's vector-Jacobian product (here g(x) = 2x: twice the identity's)
    doubled = _grad(BPDA(jpeg, backward=lambda v: 2 * v), x, y)
    assert torch.allclose(doubled, 2 * _grad(BPDA(jpeg), x, y), atol=1e-6)
    v = torch.tensor([[[[0.2, 0.7, 0.5001]]]], requires_grad=True)
    out = straight_through(BitDepthReduction(1), v)
    assert out.detach().flatten().tolist() == [0.0, 1.0, 1.0]  # exact quantized values, not x + (t - x)


def test_quantized_model_resists_pgd_and_falls_to_pgd_through_bpda(natural, digits_sets):
    _, test = digits_sets
    x, y = test.x, test.y
    defended = InputTransformed(BitDepthReduction(2), natural)
    pgd, gen = PGD(steps=20), lambda: torch.Generator().manual_seed(0)
    clean = _accuracy(defended, x, y)
    plain = _accuracy(defended, pgd(defended, x, y, eps=0.2, generator=gen()), y)
    bpda = _accuracy(defended, pgd(BPDA(defended), x, y, eps=0.2, generator=gen()), y)
    # measured (300 test digits_sets, eps 0.2, PGD-20): clean 97.3%, plain PGD 91.7%, PGD through BPDA 0.0%
    assert clean >= 0.93 and plain >= 0.85, f"the masked model should look robust: clean {clean:.3f}, PGD {plain:.3f}"
    assert bpda <= 0.05, f"PGD through BPDA left {bpda:.3f} accuracy (plain PGD {plain:.3f})"


def test_eot_averages_gradients_of_draws(resize_pad_model, digits_sets):
    _, test = digits_sets
    x, y = test.x, test.y
    reference = _grad(EOT(resize_pad_model, samples=512), x, y).flatten(1)
    cosine = {k: float(F.cosine_similarity(_grad(EOT(resize_pad_model, samples=k), x, y).flatten(1),
                                            reference).mean()) for k in (1, 32)}
    # measured: cosine to the 512-draw gradient 0.69 for one draw, 0.95 for 32
    assert cosine[32] >= 0.9 and cosine[32] >= cosine[1] + 0.15, cosine


def test_eot_raises_pgd_success_against_random_resize_pad(resize_pad_model, digits_sets):
    _, test = digits_sets
    x, y = test.x, test.y
    pgd, gen = PGD(steps=10), lambda: torch.Generator().manual_seed(0)
    clean = _accuracy(resize_pad_model, x, y, draws=5)
    plain = _accuracy(resize_pad_model, pgd(resize_pad_model, x, y, eps=0.1, generator=gen()), y, draws=5)
    eot = _accuracy(resize_pad_model, pgd(EOT(resize_pad_model, samples=32), x, y, eps=0.1, generator=gen()), y,
                    draws=5)
    # measured (300 digits_sets, eps 0.1, PGD-10, 5 fresh draws): clean 95.1%, plain PGD 35.6%, PGD + EOT-32 25.9%
    assert clean >= 0.9, f"clean accuracy under random resize-and-pad {clean:.3f}"
    assert eot <= plain - 0.06, f"EOT did not help the attack: plain PGD {plain:.3f}, PGD+EOT {eot:.3f}"


def test_eot_of_a_deterministic_model_is_the_model(natural, digits_sets):
    _, test = digits_sets
    x = test.x[:10]
    with torch.no_grad():
        logits = natural(x)
        assert torch.allclose(EOT(natural, samples=3)(x), logits.log_softmax(1), atol=1e-5)
        assert torch.allclose(EOT(natural, samples=3, average="logits", batch_size=7)(x), logits, atol=1e-6)


def test_eot_chunks_agree_and_copies_draw_independently():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    seen = []

    def spy(inp):
        seen.append(inp)
        return InputTransformed(RandomResizePad(2, seed=5), net)(inp)

    EOT(spy, samples=6, batch_size=5)(x)
    assert [len(s) for s in seen] == [5, 5, 5, 5, 4]
    rows = torch.cat(seen)
    assert torch.equal(rows[4:8], x) and torch.equal(rows[20:24], x)  # copy j of sample i is row 4 j + i
    copies = InputTransformed(RandomResizePad(2, seed=0), torch.nn.Identity())(x.repeat(6, 1, 1, 1)).reshape(6, 4, -1)
    differs = (copies[1:] != copies[:1]).any(dim=2).any(dim=0)  # per image: some copy differs from copy 0
    assert bool(differs.all()), "all copies of one image got the same layout"


def test_wrappers_leave_model_state_untouched(natural, digits_sets):
    _, test = digits_sets
    model = digits_mlp().train()
    x, y = test.x[:8], test.y[:8]
    for wrapped in (BPDA(InputTransformed(BitDepthReduction(2), model)), EOT(model, samples=2)):
        PGD(steps=2)(wrapped, x, y, eps=0.1)
        assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())


def test_bad_arguments_say_what_to_do(natural):
    with pytest.raises(GibbonInputError, match="InputTransformed"):
        BPDA(natural)
    with pytest.raises(GibbonInputError, match="samples"):
        EOT(natural, samples=0)
    with pytest.raises(GibbonInputError, match="average"):
        EOT(natural, average="median")
    with pytest.raises(GibbonInputError, match="keeps the shape"):
        straight_through(lambda v: v.flatten(1), torch.rand(2, 1, 2, 2))
