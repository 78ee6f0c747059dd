"""Fast adversarial training (Wong, Rice & Kolter 2020, arXiv:2001.03994) on real digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _helpers import digits_mlp
from gibbon import zoo
from gibbon.attacks import PGD
from gibbon.core.checks import GibbonInputError
from gibbon.defenses import fast_objective


@pytest.fixture(scope="module")
def natural_and_fast(digits_sets):
    """The same MLP trained 10 epochs (cyclic lr 1e-2, batch 50) with clean CE and with the fast objective."""
    train, _ = digits_sets
    models = {}
    for name, objective in (("natural", None), ("fast", fast_objective(0.1))):
        model = digits_mlp()
        zoo.fit(model, train, epochs=10, batch_size=50, lr=1e-2, schedule="cyclic", objective=objective,
                progress=False)
        models[name] = model
    return models


def _pgd_accuracy(model, x, y, eps):
    x_adv = PGD(steps=20)(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def test_objective_loss_exceeds_clean_loss(natural_and_fast, digits_sets):
    _, test = digits_sets
    model = natural_and_fast["natural"]
    objective = fast_objective(0.1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = float(F.cross_entropy(model(test.x), test.y))
    adv = float(objective(model, test.x, test.y).detach())
    # measured: clean 0.075, fast objective 1.26 on the naturally trained MLP
    assert adv > 3 * clean + 0.1, f"fast objective loss {adv:.4f} not well above clean CE {clean:.4f}"


def test_fast_training_is_more_robust_to_pgd(natural_and_fast, digits_sets):
    _, test = digits_sets
    natural = _pgd_accuracy(natural_and_fast["natural"], test.x, test.y, 0.1)
    fast = _pgd_accuracy(natural_and_fast["fast"], test.x, test.y, 0.1)
    clean = zoo.accuracy(natural_and_fast["fast"], test)
    # measured (PGD-20, eps 0.1, 300 test digits): natural 43%, fast 78%; fast-trained clean 97%
    assert clean >= 0.93, f"fast-trained clean accuracy {clean:.3f}"
    assert fast >= 0.65 and fast >= natural + 0.2, f"PGD eps 0.1 accuracy: fast {fast:.3f}, natural {natural:.3f}"


def test_objective_leaves_no_trace_and_stays_in_the_ball(digits_sets):
    train, _ = digits_sets
    x, y = train.x[:32], train.y[:32]
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = digits_mlp()

        def forward(self, inp):
            seen.append(inp.detach().clone())
            return self.net(inp)

    model = Spy().train()
    eps = 0.1
    loss = fast_objective(eps, step_size=0.125, generator=torch.Generator().manual_seed(0))(model, x, y)
    assert all(p.grad is None for p in model.parameters()), "the perturbation step filled param.grad"
    assert model.training and loss.requires_grad and loss.ndim == 0
    assert len(seen) == 2  # one gradient pass for delta, one training pass
    for inp in seen:
        assert float((inp - x).abs().max()) <= eps + 1e-6
    assert seen[1].min() >= 0 and seen[1].max() <= 1, "the training input left the box"
    assert float((seen[1] - x).abs().max()) > 0.09  # the FGSM step of 0.125 reaches the ball's edge
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_same_generator_same_loss(digits_sets):
    train, _ = digits_sets
    model = digits_mlp()
    a = fast_objective(0.1, generator=torch.Generator().manual_seed(3))(model, train.x[:16], train.y[:16])
    b = fast_objective(0.1, generator=torch.Generator().manual_seed(3))(model, train.x[:16], train.y[:16])
    assert torch.equal(a, b)


def test_bad_eps_says_what_to_do():
    with pytest.raises(GibbonInputError, match="objective=None"):
        fast_objective(0.0)


def test_random_start_is_two_sided_at_saturated_pixels():
    """Wong et al.'s code takes the gradient at the unclipped start; clipping it makes the start
    one-sided at 0-pixels (most of MNIST), the FGSM step then always lands on +eps there, and
    MNIST training overfits catastrophically (PGD-40 ~0% after 10 epochs, measured)."""
    x, y = torch.zeros(64, 1, 8, 8), torch.arange(64) % 10
    seen = []

    def model(inp):
        seen.append(inp.detach().clone())
        return digits_mlp()(inp)

    eps = 0.3
    for start_in_box, low in ((False, -eps), (True, 0.0)):
        seen.clear()
        fast_objective(eps, generator=torch.Generator().manual_seed(0), start_in_box=start_in_box)(model, x, y)
        start, train_input = seen
        below = float((start < 0).float().mean())
        assert (below > 0.4) if not start_in_box else (below == 0), f"start_in_box={start_in_box}: {below:.2f} below 0"
        assert start.min() >= low - 1e-6 and train_input.min() >= 0 and train_input.max() <= eps + 1e-6
        # clipped start at a 0-pixel: delta >= 0, so delta + 0.375 * sign(g) is +eps or below 0 (clipped to 0);
        # unclipped: delta + 0.375 covers [0.075, 0.3], not only the ball's edge
        positive = train_input[train_input > 0]
        at_edge = float((positive >= eps - 1e-6).float().mean())
        assert (at_edge < 0.9) if not start_in_box else (at_edge == 1.0), f"{at_edge:.2f} of moved pixels at +eps"
