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
