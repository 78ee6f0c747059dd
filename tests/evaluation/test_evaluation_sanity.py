import copy
from dataclasses import dataclass

import pytest
import torch
from _evaluation_helpers import MCDropoutModel, NoisyModel, NoOpAttack, QuantizedModel, StepAttack, input_gradient
from torch import nn

from gibbon.attacks.registry import AttackConfig
from gibbon.evaluation import evaluate


def messages(report, word):
    return [w for w in report.warnings if word in w]


def test_honest_linear_model_has_no_warnings(linear_digits):
    model, data = linear_digits
    report = evaluate(model, data, [StepAttack(), NoOpAttack()], [0.05, 0.1, 0.3], progress=False)
    assert report.warnings == []


def test_softmax_output(linear_digits):
    model, data = linear_digits
    report = evaluate(nn.Sequential(model, nn.Softmax(dim=1)), data, [NoOpAttack()], 0.1, progress=False)
    assert len(messages(report, "remove the final softmax")) == 1, report.warnings
    assert messages(report, "probabilities")


@pytest.mark.parametrize("wrapper", [NoisyModel, MCDropoutModel])
def test_randomized_model(linear_digits, wrapper):
    model, data = linear_digits
    report = evaluate(wrapper(model), data, [NoOpAttack()], 0.1, progress=False)
    assert len(messages(report, "EOT")) == 1, report.warnings


def test_dropout_in_train_mode_is_switched_off(linear_digits):
    model, data = linear_digits
    dropout = nn.Sequential(nn.Dropout(0.5), copy.deepcopy(model)).train()
    report = evaluate(dropout, data, [NoOpAttack()], 0.1, progress=False)
    assert not messages(report, "EOT"), report.warnings
    assert dropout.training


def test_zero_gradients(linear_digits):
    model, data = linear_digits
    report = evaluate(QuantizedModel(model), data, [NoOpAttack()], 0.1, progress=False)
    assert len(messages(report, "gradient masking")) == 1, report.warnings
    x = data.x[:100]
    zero = (input_gradient(QuantizedModel(model), x, data.y[:100]).flatten(1) == 0).all(1)
    assert f"exactly zero on {int(zero.sum())} of 100" in messages(report, "gradient masking")[0]


@dataclass(frozen=True)
class WeakerAtLargeEps(AttackConfig):
    """A deliberately broken attack: a full step below eps 0.2, a tiny one above."""

    name = "test-weaker"

    def __call__(self, model, x, y, *, eps, norm, bounds, target=None, generator=None):
        step = eps if eps < 0.2 else 0.01
        return StepAttack()(model, x, y, eps=step, norm=norm, bounds=bounds)


def test_accuracy_rising_with_eps(linear_digits):
    model, data = linear_digits
    report = evaluate(model, data, [WeakerAtLargeEps()], [0.1, 0.3], progress=False)
    assert len(messages(report, "rises with eps")) == 1, report.warnings


def test_robust_inside_a_ball_covering_the_box(linear_digits):
    model, data = linear_digits
    report = evaluate(model, data, [NoOpAttack()], [0.1, 1.0], progress=False)
    assert len(messages(report, "whole input box")) == 1, report.warnings
    quiet = evaluate(model, data, [StepAttack()], [1.0], progress=False)
    assert quiet.warnings == []


def test_sanity_checks_leave_the_model_alone(linear_digits):
    model, data = linear_digits
    torch.manual_seed(123)
    state = torch.get_rng_state()
    evaluate(model, data, [NoOpAttack()], 0.1, progress=False)
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), state)


@dataclass(frozen=True)
class RandomSearchAttack(AttackConfig):
    """Gradient-free: tries random sign corners of the ball and keeps the first that fools."""

    name = "test-random-search"
    tries: int = 20

    def __call__(self, model, x, y, *, eps, norm, bounds, target=None, generator=None):
        best = x.clone()
        with torch.no_grad():
            for _ in range(self.tries):
                u = torch.rand(x.shape, generator=generator)
                cand = (x + eps * torch.sign(u - 0.5)).clamp(*bounds)
                fooled = model(cand).argmax(1) != y
                best[fooled] = cand[fooled]
        return best


@pytest.mark.parametrize("cascade", [False, True])
def test_gradient_free_attack_beating_gradient_attack_is_flagged(linear_digits, cascade):
    model, data = linear_digits
    masked = QuantizedModel(model)
    report = evaluate(masked, data, [StepAttack(), RandomSearchAttack()], [0.3], cascade=cascade, progress=False)
    step = report.robust_accuracy("test-step", 0.3)
    search = report.robust_accuracy("test-random-search", 0.3)
    assert search < step - 0.05, (step, search)
    assert len(messages(report, "gradient-free attack test-random-search")) == 1, report.warnings


def test_gradient_free_attack_not_flagged_when_gradients_work(linear_digits):
    model, data = linear_digits
    report = evaluate(model, data, [StepAttack(), RandomSearchAttack()], [0.3], progress=False)
    assert not messages(report, "gradient-free"), report.warnings


def test_attack_accuracy_rising_with_eps_is_flagged():
    from gibbon.evaluation.report import Result
    from gibbon.evaluation.sanity import attack_checks

    rows = [Result(name, {}, eps, "linf", acc, (0, 1), gradients=10, forwards=10)
            for eps, acc, name in [(0.1, 0.5, "pgd"), (0.2, 0.6, "pgd"), (0.3, 0.1, "pgd"), (0.1, 0.4, "fgsm")]]
    warnings = attack_checks(rows, cascade=False)
    assert len(warnings) == 1 and "rises with eps" in warnings[0] and "pgd" in warnings[0]
    assert attack_checks(rows, cascade=True) == []
