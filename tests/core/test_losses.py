import torch

from gibbon.core import cross_entropy, dlr, dlr_targeted, is_adversarial, margin


def test_margin_sign_matches_misclassification():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=g)
    y = torch.randint(0, 10, (200,), generator=g)
    assert torch.equal(margin(logits, y, confidence=float("inf")) > 0, is_adversarial(logits, y))


def test_losses_are_per_sample():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 10, generator=g, requires_grad=True)
    y = torch.randint(0, 10, (8,), generator=g)
    for fn in (cross_entropy, margin, dlr):
        (grad,) = torch.autograd.grad(fn(logits, y)[3], logits)
        assert float(grad[[0, 1, 2, 4, 5, 6, 7]].abs().sum()) == 0.0, fn.__name__


def test_dlr_is_scale_and_shift_invariant():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(16, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (16,), generator=g)
    t = (y + 1) % 10
    assert torch.allclose(dlr(logits, y), dlr(3 * logits + 7, y))
    assert torch.allclose(dlr_targeted(logits, y, t), dlr_targeted(5 * logits - 2, y, t))


def test_cross_entropy_matches_definition():
    logits = torch.tensor([[1.0, 2.0, 3.0]])
    expected = -torch.log_softmax(logits, 1)[0, 1]
    assert torch.allclose(cross_entropy(logits, torch.tensor([1])), expected.unsqueeze(0))
