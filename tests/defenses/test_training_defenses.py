"""The training defenses (FGSM, PGD, TRADES, ensemble, distillation) on real digits, and their registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _helpers import digits_mlp
from gibbon import zoo
from gibbon.attacks import FGSM, PGD
from gibbon.core.checks import GibbonInputError
from gibbon.defenses import (DEFENSES, CatastrophicOverfitting, ensemble_training_objective, fgsm_training_objective,
                             overfitting_guard, parse_defense, pgd_training_objective, trades_objective)

FIT = dict(epochs=10, batch_size=50, lr=1e-2, progress=False)


@pytest.fixture(scope="module")
def trained(digits_sets):
    """The same MLP trained 10 epochs plain and with each defense (seconds in all)."""
    train, _ = digits_sets
    models = {}
    for name in ("plain", "fgsm:eps=0.1", "pgd:eps=0.1,steps=7,step_size=0.03",
                 "trades:eps=0.1,steps=7,step_size=0.03", "distill:temperature=100"):
        model = digits_mlp()
        if name == "plain":
            zoo.fit(model, train, **FIT)
        else:
            parse_defense(name).fit(model, train, **FIT)
        models[name.partition(":")[0]] = model.eval()
    return models


def _accuracy(model, attack, x, y, eps):
    x_adv = x if attack is None else attack(model, x, y, eps=eps, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def test_registry_has_the_issue_names_and_parses_options():
    assert {"fgsm", "pgd", "fast", "trades", "ensemble", "distill"} <= set(DEFENSES)
    cfg = parse_defense("pgd:eps=0.2,steps=10,attack-in-eval=false")
    assert (cfg.eps, cfg.steps, cfg.attack_in_eval) == (0.2, 10, False)
    assert parse_defense(cfg.spec()) == cfg  # the card's spec round-trips
    with pytest.raises(GibbonInputError, match="unknown defense 'nope'.*fgsm"):
        parse_defense("nope")
    with pytest.raises(GibbonInputError, match="options are: eps, clean_weight"):
        parse_defense("fgsm:bogus=1")
    with pytest.raises(GibbonInputError, match="eps must be > 0"):
        fgsm_training_objective(0.0)
    with pytest.raises(GibbonInputError, match="temperature must be > 0"):
        parse_defense("distill:temperature=0")


@pytest.mark.parametrize("name", ["fgsm", "pgd", "trades"])
def test_adversarial_training_is_more_robust_to_pgd(trained, digits_sets, name):
    _, test = digits_sets
    plain = _accuracy(trained["plain"], PGD(steps=20), test.x, test.y, 0.1)
    defended = _accuracy(trained[name], PGD(steps=20), test.x, test.y, 0.1)
    clean = _accuracy(trained[name], None, test.x, test.y, 0)
    # measured: plain 38.7%; fgsm 77.0%, pgd 79.0%, trades 71.7% (clean 98.3 / 98.0 / 91.7%)
    assert defended > plain + 0.2, f"{name}: PGD-20 accuracy {defended:.1%} vs plain {plain:.1%}"
    assert clean > 0.85, f"{name}: clean accuracy {clean:.1%}"


def test_fgsm_objective_is_the_papers_weighted_sum(digits_sets):
    train, _ = digits_sets
    model, x, y = digits_mlp(), train.x[:40], train.y[:40]
    loss, logits = fgsm_training_objective(0.1, clean_weight=0.3)(model, x, y)
    x_adv = FGSM()(model, x, y, eps=0.1)
    expected = 0.3 * F.cross_entropy(model(x), y) + 0.7 * F.cross_entropy(model(x_adv), y)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert torch.equal(logits, model(x))


def test_predicted_craft_labels_avoid_label_leaking(digits_sets):
    """``craft_labels=predicted`` crafts on the model's own predictions, never on ``y``
    (Kurakin et al. 2017; Tramer et al.'s code): the example does not depend on the labels."""
    train, _ = digits_sets
    model, x, y = digits_mlp(), train.x[:40], train.y[:40]
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert (predicted != y).any(), "an untrained model should get some labels wrong"
    loss, _ = fgsm_training_objective(0.1, craft_labels="predicted")(model, x, y)
    x_adv = FGSM()(model, x, predicted, eps=0.1)
    expected = 0.5 * F.cross_entropy(model(x), y) + 0.5 * F.cross_entropy(model(x_adv), y)
    assert torch.allclose(loss, expected, atol=1e-6)
    true_loss, _ = fgsm_training_objective(0.1)(model, x, y)
    assert not torch.allclose(loss, true_loss, atol=1e-4), "predicted labels made no difference"
    static = [digits_mlp(seed=1).eval().requires_grad_(False)]
    ens = ensemble_training_objective(static, 0.1, craft_labels="predicted")
    torch.manual_seed(0)
    assert all(torch.isfinite(ens(model, x, y)[0]) for _ in range(4))
    assert parse_defense("fgsm:craft_labels=predicted").craft_labels == "predicted"
    with pytest.raises(GibbonInputError, match="craft_labels must be one of true, predicted"):
        ensemble_training_objective(static, 0.1, craft_labels="guess")
    with pytest.raises(GibbonInputError, match="craft_labels must be one of"):
        fgsm_training_objective(0.1, craft_labels="guess")


class _ModeRecorder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.modes = inner, []

    def forward(self, x):
        self.modes.append(self.training)
        return self.inner(x)


@pytest.mark.parametrize("make", [
    lambda: pgd_training_objective(0.1, steps=3, step_size=0.05),
    lambda: trades_objective(0.1, steps=3, step_size=0.05),
])
def test_inner_attack_runs_in_eval_mode_and_fills_no_param_grad(digits_sets, make):
    train, _ = digits_sets
    model = _ModeRecorder(digits_mlp()).train()
    loss, _ = make()(model, train.x[:20], train.y[:20])
    assert all(p.grad is None for p in model.parameters()), "the inner attack filled param.grad"
    assert model.training
    # the crafting forwards ran in eval mode, the training forwards in train mode
    assert False in model.modes and model.modes[-1] is True
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_pgd_training_examples_stay_in_ball_and_box(digits_sets):
    from gibbon.defenses._inner import pgd_example

    train, _ = digits_sets
    x, y = train.x[:30], train.y[:30]
    x_adv = pgd_example(digits_mlp(), x, y, eps=0.1, steps=5, step_size=0.05, bounds=(0.0, 1.0))
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 0.05  # it moved


def test_trades_with_beta_zero_is_clean_cross_entropy(digits_sets):
    train, _ = digits_sets
    model, x, y = digits_mlp(), train.x[:20], train.y[:20]
    loss, _ = trades_objective(0.1, beta=0.0, steps=2, step_size=0.05)(model, x, y)
    assert torch.allclose(loss, F.cross_entropy(model(x), y), atol=1e-6)
    with_kl, _ = trades_objective(0.1, beta=6.0, steps=2, step_size=0.05)(model, x, y)
    assert with_kl > loss


def test_ensemble_objective_crafts_on_static_models_only_sometimes(digits_sets):
    train, _ = digits_sets
    x, y = train.x[:20], train.y[:20]
    static = [digits_mlp(seed=s).eval().requires_grad_(False) for s in (1, 2)]
    model = digits_mlp()
    objective = ensemble_training_objective(static, 0.1)
    torch.manual_seed(0)
    losses = {round(float(objective(model, x, y)[0].detach()), 6) for _ in range(30)}
    assert len(losses) == 3, f"expected one loss per source (model + 2 static), got {sorted(losses)}"
    assert all(p.grad is None for m in static for p in m.parameters())
    with pytest.raises(GibbonInputError, match="at least one static"):
        ensemble_training_objective([], 0.1)


def test_distillation_saturates_the_softmax_and_masks_fgsm(trained, digits_sets):
    _, test = digits_sets
    with torch.no_grad():
        gaps = {k: float(m(test.x).topk(2, 1).values.diff(dim=1).abs().median()) for k, m in trained.items()}
    # measured: plain 7.3, distilled 190 (logits trained to be divided by T = 100)
    assert gaps["distill"] > 10 * gaps["plain"], gaps
    plain_fgsm = _accuracy(trained["plain"], FGSM(), test.x, test.y, 0.1)
    distilled_fgsm = _accuracy(trained["distill"], FGSM(), test.x, test.y, 0.1)
    margin = _accuracy(trained["distill"], PGD(steps=20, loss="margin"), test.x, test.y, 0.1)
    # measured: FGSM leaves 43% (plain) vs 75% (distilled); PGD on the margin leaves 40% on the distilled model
    assert distilled_fgsm > plain_fgsm + 0.2, (plain_fgsm, distilled_fgsm)
    assert margin < distilled_fgsm - 0.2, (margin, distilled_fgsm)


def test_overfitting_guard_stops_and_keeps_the_best_epoch(digits_sets):
    train, test = digits_sets
    model = digits_mlp()
    zoo.fit(model, train, **FIT)
    probe = test
    history, states = [], []
    guard = overfitting_guard(model, probe, eps=0.05, history=history, states=states, drop=0.2)
    guard(1, {"epoch": 1})
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # a collapsed network: constant prediction
    with pytest.raises(CatastrophicOverfitting, match="epoch 2"):
        guard(2, {"epoch": 2})
    assert states[0][0] == 1 and all(torch.equal(states[0][1][k], good[k]) for k in good)
    assert history[0]["probe_pgd_accuracy"] > history[1]["probe_pgd_accuracy"] + 0.2


def test_zoo_trained_caches_defended_models_with_their_spec(tmp_path):
    path = zoo.trained("mlp-200-200", "digits", epochs=1, defense=parse_defense("fgsm:eps=0.1"), cache_dir=tmp_path, progress=False)
    card = zoo.io.read_card(path)
    assert card["defense"]["spec"] == "fgsm:clean_weight=0.5,craft_labels=true,eps=0.1"
    assert card["training"]["defense"] == "fgsm:clean_weight=0.5,craft_labels=true,eps=0.1"
    assert "-fgsm-" in path.parent.name
    plain = zoo.trained("mlp-200-200", "digits", epochs=1, cache_dir=tmp_path, progress=False)
    assert plain.parent != path.parent and "defense" not in zoo.io.read_card(plain)


def test_cli_trains_with_a_defense_and_records_it(tmp_path, monkeypatch):
    import json

    from _helpers import run_cli

    out = tmp_path / "m.safetensors"
    code = run_cli(monkeypatch, "train", "--arch", "mlp-200-200", "--dataset", "digits", "--epochs", "1",
                   "--defense", "pgd:eps=0.1,steps=3,step_size=0.05", "--out", str(out))
    assert code == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["defense"]["spec"] == "pgd:attack_in_eval=True,eps=0.1,random_start=True,step_size=0.05,steps=3"
    assert run_cli(monkeypatch, "train", "--arch", "mlp-200-200", "--dataset", "digits", "--defense", "nope",
                   "--out", str(out)) == 2
    assert run_cli(monkeypatch, "train", "--technique", "lr", "--dataset", "digits", "--defense", "fgsm",
                   "--out", str(tmp_path / "m.skops")) == 2
    assert run_cli(monkeypatch, "defenses") == 0
