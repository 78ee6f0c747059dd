"""Papernot et al. 2017's substitute attack (arXiv:1602.02697) on the 8x8 digits, with the paper's substitute
architecture A (appendix) and training "from scratch" each substitute epoch (section 4.1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from _helpers import fit_full_batch, run_cli
from gibbon import data, zoo
from gibbon.attacks import FGSM
from gibbon.core.checks import GibbonInputError
from gibbon.oracles import Oracle
from gibbon.transfer import jacobian_augmentation, substitute_attack, train_substitute
from gibbon.zoo.architectures import papernot_a


def _mlp(hidden, seed):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(hidden, 10))


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "train"), data.load("digits", "test")


@pytest.fixture(scope="module")
def oracle_model(digits):
    """The victim: an MLP the adversary never sees, trained on the digits' training split."""
    train, _ = digits
    return fit_full_batch(_mlp(64, seed=0), train.x, train.y, steps=200)


def test_augmentation_steps_along_the_sign_of_the_label_gradient():
    net = _mlp(16, seed=1).eval()
    x = torch.rand(20, 1, 8, 8) * 0.6 + 0.2  # away from the box: no clipping
    labels = torch.arange(20) % 10
    new = jacobian_augmentation(net, x, labels, 0.05, (0.0, 1.0))
    assert torch.allclose((new - x).abs(), torch.full_like(x, 0.05), atol=1e-6)
    with torch.no_grad():
        before, after = net(x).softmax(1).gather(1, labels[:, None]), net(new).softmax(1).gather(1, labels[:, None])
    assert bool((after > before).all())  # a positive lambda raises the label's probability
    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(x_var).softmax(1).gather(1, labels[:, None]).sum(), x_var)
    assert torch.equal((new - x).sign(), grad.sign())  # the paper's F: the softmax output
    by_logit = jacobian_augmentation(net, x, labels, 0.05, (0.0, 1.0), jacobian="logit")
    with torch.no_grad():
        assert bool((net(by_logit).gather(1, labels[:, None]) > net(x).gather(1, labels[:, None])).all())
    assert not torch.equal(by_logit, new)  # one logit's gradient is another direction
    edge = jacobian_augmentation(net, torch.ones(3, 1, 8, 8), labels[:3], 0.5, (0.0, 1.0))
    assert float(edge.max()) <= 1.0 and float(edge.min()) >= 0.5


def test_queries_double_each_round_or_grow_linearly_with_reservoir_sampling(oracle_model, digits):
    _, test = digits
    seeds = test.x[:30]
    oracle = Oracle(oracle_model, output="label")
    result = train_substitute(oracle, seeds, _mlp(32, seed=2), rounds=3, epochs=2, classes=test.classes)
    assert result.queries == oracle.total == 30 * 2 ** 3 and result.training_points == 240
    assert [h["points"] for h in result.history] == [30, 60, 120, 240]
    oracle = Oracle(oracle_model, output="label")
    result = train_substitute(oracle, seeds, _mlp(32, seed=2), rounds=4, epochs=2, reservoir_from=2,
                              reservoir_size=25, classes=test.classes)
    assert [h["points"] for h in result.history] == [30, 60, 120, 145, 170]  # sigma = 2, kappa = 25
    assert result.queries == 170


def test_substitute_attack_transfers_to_the_black_box(oracle_model, digits):
    _, test = digits
    seeds, x, y = test.x[:100], test.x[100:], test.y[100:]
    oracle = Oracle(oracle_model, output="label")  # labels only
    result = substitute_attack(oracle, seeds, _mlp(32, seed=3), x, y, FGSM(), eps=0.3, rounds=4, epochs=10,
                               lr=3e-3, classes=test.classes)
    # measured: oracle clean 0.97 -> 0.03 on FGSM eps 0.3 from the substitute (substitute accuracy
    # 0.885, agreement 0.89), 1,600 labels asked; a no-op attack keeps 0.97
    assert result.oracle_accuracy >= 0.9 and result.agreement >= 0.75, result.to_dict()
    assert result.adversarial_accuracy <= 0.3 and result.transfer_success >= 0.7, result.to_dict()
    assert result.queries == 100 * 2 ** 4 and result.attack_queries == 2 * len(x)


def test_shifted_training_copies_ask_no_more_queries_and_change_the_substitute(oracle_model, digits):
    _, test = digits
    seeds = test.x[:30]
    runs = {}
    for shift in (0, 1):
        oracle = Oracle(oracle_model, output="label")
        runs[shift] = train_substitute(oracle, seeds, _mlp(32, seed=2), rounds=2, epochs=3, shift=shift,
                                       classes=test.classes)
        assert runs[shift].queries == oracle.total == 30 * 2 ** 2  # the shifted copies are never queried
    plain, shifted = (dict(runs[k].substitute.named_parameters()) for k in (0, 1))
    assert not torch.equal(plain["1.weight"], shifted["1.weight"])  # the option reaches the training
    # On these 8x8 digits a 1-pixel shift is an eighth of the image: measured, it lowers the
    # substitute's accuracy (0.85-0.90 to 0.74). On 28x28 MNIST 2 pixels raise it (81% to 86%).


def test_bad_arguments_say_what_to_do(oracle_model, digits):
    _, test = digits
    with pytest.raises(GibbonInputError, match="rounds >= 0"):
        train_substitute(oracle_model, test.x[:10], _mlp(8, 0), rounds=-1)
    with pytest.raises(GibbonInputError, match="jacobian must be one of"):
        train_substitute(oracle_model, test.x[:10], _mlp(8, 0), jacobian="softmax")
    oracle = Oracle(oracle_model, output="label")
    with pytest.raises(GibbonInputError, match="whole number of pixels >= 0"):
        train_substitute(oracle, test.x[:10], _mlp(8, 0), shift=-1)
    assert oracle.total == 0  # refused before any query


def test_cli_runs_the_substitute_attack_against_a_skops_oracle(tmp_path, monkeypatch, capsys):
    import json

    def cli(*args):
        return run_cli(monkeypatch, *args)

    model = tmp_path / "lr.skops"
    assert cli("train", "--technique", "lr", "--dataset", "digits", "--out", str(model)) == 0
    report = tmp_path / "sub.json"
    assert cli("substitute", "--oracle", f"sklearn:{model}", "--dataset", "digits", "--seed-images", "100",
               "--n", "200", "--rounds", "3", "--arch", "mlp-200-200", "--json", str(report)) == 0
    result = json.loads(report.read_text())
    assert result["queries"] == 800 and result["shift"] == 0 and result["oracle_accuracy"] >= 0.9
    # measured: the logistic regression falls from 0.98 to 0.065 (FGSM eps 0.3 from the MLP substitute)
    assert result["adversarial_accuracy"] <= 0.4, result
    # an API budget of 900 labels: 400 kept back to score 200 images twice, so training stops at 500
    assert cli("substitute", "--oracle", f"sklearn:{model}", "--dataset", "digits", "--seed-images", "100",
               "--n", "200", "--rounds", "3", "--epochs", "2", "--max-total-queries", "900",
               "--json", str(report)) == 0
    result = json.loads(report.read_text())
    assert result["stopped_by_budget"] and result["queries"] == result["training_points"] == 500
    assert result["attack_queries"] == 400
    assert cli("substitute", "--oracle", f"sklearn:{model}", "--dataset", "digits", "--rounds", "-1") == 2
    assert cli("substitute", "--oracle", f"sklearn:{model}", "--dataset", "digits", "--shift", "-1") == 2
    assert cli("substitute", "--oracle", f"sklearn:{model}", "--dataset", "digits", "--seed-images", "100",
               "--n", "200", "--max-total-queries", "450") == 2  # 400 for scoring leave 50 for 100 seeds
    assert "fewer than the 100 seed images" in " ".join(capsys.readouterr().err.split())
    capsys.readouterr()


def test_architecture_a_layers_on_mnist_and_upsampled_digits():
    model = papernot_a((1, 28, 28), 10)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 64] and sum(isinstance(m, nn.MaxPool2d) for m in model) == 2
    assert [m.out_features for m in linears] == [200, 200, 10]
    # 3x3 valid convolutions: 28 -> 26 -> 13 -> 11 -> 5, so 64 * 5 * 5 features reach the first fc layer
    assert linears[0].in_features == 1600
    assert sum(p.numel() for p in model.parameters()) == 320 + 18_496 + 320_200 + 40_200 + 2_010
    small = papernot_a((1, 8, 8), 10)
    assert isinstance(small[0], nn.Upsample)
    assert [p.shape for p in small.parameters()] == [p.shape for p in model.parameters()]
    with torch.no_grad():
        assert small.eval()(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert papernot_a((1, 28, 28), 10, kernel_size=2)[0].kernel_size == (2, 2)
    with pytest.raises(GibbonInputError, match="kernel_size"):
        papernot_a((1, 28, 28), 10, kernel_size=0)


def test_restart_trains_every_round_from_the_initial_weights(oracle_model, digits, monkeypatch):
    _, test = digits
    starts, plain_fit = [], zoo.fit

    def recording_fit(model, *args, **kwargs):
        starts.append({k: v.clone() for k, v in model.state_dict().items()})
        return plain_fit(model, *args, **kwargs)

    monkeypatch.setattr(zoo, "fit", recording_fit)
    for restart in (True, False):
        starts.clear()
        substitute = _mlp(32, seed=5)
        initial = {k: v.clone() for k, v in substitute.state_dict().items()}
        result = train_substitute(Oracle(oracle_model, output="label"), test.x[:30], substitute, rounds=2, epochs=2,
                                  classes=test.classes, restart=restart)
        assert len(starts) == 3 and result.queries == 30 * 2 ** 2  # restarting asks no more labels
        same = [all(torch.equal(s[k], initial[k]) for k in initial) for s in starts]
        assert same == ([True] * 3 if restart else [True, False, False]), restart
        assert not torch.equal(substitute.state_dict()["1.weight"], initial["1.weight"])  # it was trained


def test_architecture_a_substitute_restarted_each_round_transfers(oracle_model, digits):
    _, test = digits
    seeds, x, y = test.x[:100], test.x[100:300], test.y[100:300]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        substitute = papernot_a((1, 8, 8), 10)
        noise = (x + 0.15 * torch.randn(x.shape).sign()).clamp(0.0, 1.0)  # the same budget, no attack
    with torch.no_grad():
        noise_accuracy = float((oracle_model(noise).argmax(1) == y).float().mean())
    result = substitute_attack(Oracle(oracle_model, output="label"), seeds, substitute, x, y, FGSM(), eps=0.15,
                               rounds=3, epochs=5, restart=True, classes=test.classes)
    assert result.oracle_accuracy >= 0.9 and result.substitute_accuracy >= 0.5, result.to_dict()
    # measured: about 0.56 against 0.88 for random signs of the same size
    assert result.adversarial_accuracy <= noise_accuracy - 0.2, (result.to_dict(), noise_accuracy)
    assert result.queries == 100 * 2 ** 3
