"""The contract every registered attack keeps (ARCHITECTURE.md), checked over the whole registry.

A new attack is covered the moment it is registered: parametrisation reads ``ATTACKS``.
"""

from __future__ import annotations

import pytest
import torch

from gibbon.attacks import ATTACKS
from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import get_norm

EPS = {"linf": 0.1, "l2": 1.0, "l1": 5.0, "l0": 6.0}
# Float32 tolerance for the ball: a few ulps of the input's scale (x + delta rounds).
ULPS = 8 * torch.finfo(torch.float32).eps
CASES = [(name, norm) for name, cls in sorted(ATTACKS.items()) for norm in cls.norms]


def _config(name):
    cls = ATTACKS[name]
    # Decision-based attacks (minimal and black-box) spend their whole budget by design (no early
    # stop): 500 queries per sample keep the contract cheap and still run every phase.
    return cls(max_queries=500) if cls.minimal and cls.black_box else cls()


def _call(name, model, x, y, norm, *, seed=0, target=None, bounds=(0.0, 1.0)):
    attack = _config(name)
    if target is None and attack.targeted_only:
        target = (y + 1) % 10
    gen = torch.Generator().manual_seed(seed)
    return attack(model, x, y, eps=EPS[norm], norm=norm, target=target, bounds=bounds, generator=gen)


@pytest.fixture(scope="module")
def batch(digits):
    _, _, x, y = digits
    return x[:64].clone(), y[:64].clone()


@pytest.mark.parametrize("name,norm", CASES)
def test_shape_dtype_device_bounds_ball(name, norm, digits_mlp, batch):
    x, y = batch
    x_adv = _call(name, digits_mlp, x, y, norm)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    if not ATTACKS[name].minimal:  # minimal-perturbation attacks have no ball to stay in
        dist = get_norm(norm).distance(x_adv - x)
        assert float(dist.max()) <= EPS[norm] * (1 + ULPS) + ULPS, f"{name}/{norm} left the ball: {float(dist.max())}"
    assert not x_adv.requires_grad


@pytest.mark.parametrize("name,norm", CASES)
def test_no_trace_left(name, norm, digits_mlp, batch):
    x, y = batch
    x_before = x.clone()
    flags = [p.requires_grad for p in digits_mlp.parameters()]
    rng_before = torch.get_rng_state()
    digits_mlp.train(False)
    _call(name, digits_mlp, x, y, norm)
    assert torch.equal(x, x_before), "the attack mutated its input"
    assert not digits_mlp.training
    assert [p.requires_grad for p in digits_mlp.parameters()] == flags
    assert all(p.grad is None for p in digits_mlp.parameters()), "the attack filled param.grad"
    assert torch.equal(torch.get_rng_state(), rng_before), "the attack used the global RNG"


@pytest.mark.parametrize("name,norm", CASES)
def test_training_flag_kept(name, norm, digits_mlp, batch):
    x, y = batch
    digits_mlp.train(True)
    try:
        _call(name, digits_mlp, x[:8], y[:8], norm)
        assert digits_mlp.training
    finally:
        digits_mlp.train(False)


@pytest.mark.parametrize("name,norm", CASES)
def test_same_seed_same_output(name, norm, digits_mlp, batch):
    x, y = batch
    assert torch.equal(_call(name, digits_mlp, x, y, norm, seed=3), _call(name, digits_mlp, x, y, norm, seed=3))


@pytest.mark.parametrize("name,norm", [c for c in CASES if not ATTACKS[c[0]].randomized])
def test_batch_size_invariance(name, norm, digits_mlp, batch):
    x, y = batch
    whole = _call(name, digits_mlp, x, y, norm)
    parts = torch.cat([_call(name, digits_mlp, x[i : i + 16], y[i : i + 16], norm) for i in range(0, 64, 16)])
    assert float((whole - parts).abs().max()) <= 1e-5


@pytest.mark.parametrize("name,norm", CASES)
def test_other_bounds(name, norm, digits_mlp, batch):
    """Nothing is hard-wired to [0, 1]: inputs in [-1, 1] stay in [-1, 1]."""
    x, y = batch
    model = torch.nn.Sequential(_Affine(0.5, 0.5), digits_mlp)  # maps [-1, 1] back to [0, 1]
    x2 = 2 * x - 1
    x_adv = _call(name, model, x2, y, norm, bounds=(-1.0, 1.0))
    assert float(x_adv.min()) >= -1.0 and float(x_adv.max()) <= 1.0
    assert float((model(x_adv).argmax(1) != y).float().mean()) > float((model(x2).argmax(1) != y).float().mean())


class _Affine(torch.nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return self.a * x + self.b


def test_every_attack_rejects_a_norm_it_does_not_define(digits_mlp, batch):
    x, y = batch
    for name, cls in ATTACKS.items():
        missing = [n for n in ("linf", "l2", "l1", "l0") if n not in cls.norms]
        for norm in missing:
            with pytest.raises(ValueError, match="defined for"):
                cls()(digits_mlp, x, y, eps=EPS[norm], norm=norm)


def test_bad_input_errors(digits_mlp, batch):
    x, y = batch
    attack = ATTACKS["pgd"]()
    with pytest.raises(ValueError, match="eps"):
        attack(digits_mlp, x, y, eps=-0.1)
    with pytest.raises(ValueError, match="bounds"):
        attack(digits_mlp, x * 3, y, eps=0.1)
    with pytest.raises(ValueError, match="integer tensor"):
        attack(digits_mlp, x, y.float(), eps=0.1)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_every_attack_rejects_non_finite_inputs_and_labels_out_of_range(name, digits_mlp, batch):
    """NaN/inf inputs used to pass and give NaN outputs; labels >= classes were 'robust' (issue 23, #6)."""
    x, y = batch[0][:8].clone(), batch[1][:8].clone()
    norm = ATTACKS[name].norms[0]
    for bad in (float("nan"), float("inf")):
        poisoned = x.clone()
        poisoned[3, 0, 2, 2] = bad
        with pytest.raises(GibbonInputError, match="NaN or infinite.*sample 3 is the first"):
            _call(name, digits_mlp, poisoned, y, norm)
    # decision-based attacks see labels only, never the class count: they refuse negative labels;
    # score-based ones check the labels against their first answer
    for label in (-1,) if name in ("boundary", "hopskipjump") else (10, -1):
        wrong = y.clone()
        wrong[5] = label
        with pytest.raises(GibbonInputError, match="labels must be class indices in"):
            _call(name, digits_mlp, x, wrong, norm, target=(y + 1) % 10 if ATTACKS[name].targeted_only else None)
    if ATTACKS[name].targeted_only or name in ("apgd", "pgd", "fgsm", "cw", "square", "one-pixel"):
        with pytest.raises(GibbonInputError, match="targets must be class indices in"):
            _call(name, digits_mlp, x, y, norm, target=torch.full_like(y, 12))


class _GradientRefusingCounter(torch.nn.Module):
    """A model seen as a black box: counts rows and refuses any input that asks for a gradient."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, x):
        if x.requires_grad and torch.is_grad_enabled():
            raise AssertionError("a black-box attack asked for a gradient")
        self.rows += x.shape[0]
        return self.model(x)


@pytest.mark.parametrize("name,norm", [c for c in CASES if ATTACKS[c[0]].black_box])
def test_black_box_never_asks_for_gradients_and_respects_max_queries(name, norm, digits_mlp, batch):
    x, y = batch
    max_queries = 50
    attack = ATTACKS[name](max_queries=max_queries)
    counter = _GradientRefusingCounter(digits_mlp)
    target = (y + 1) % 10 if attack.targeted_only else None
    attack(counter, x, y, eps=EPS[norm], norm=norm, target=target, generator=torch.Generator().manual_seed(0))
    assert counter.rows <= max_queries * len(x), f"{name}: {counter.rows} queries > {max_queries} x {len(x)}"
