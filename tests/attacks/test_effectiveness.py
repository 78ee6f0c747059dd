"""Effectiveness on a real (digits) model: thresholds a broken or no-op attack would miss."""

from __future__ import annotations

import pytest
import torch

from gibbon.attacks import ATTACKS

# Robust accuracy ceilings of the budget attacks at L-infinity eps 0.2 on the digits MLP (97%
# clean). Measured: FGSM 3.3%, R+FGSM 14.7%, BIM 0.3%, ILLC 25%, MI-FGSM 1%, PGD 0%, APGD-CE 0%,
# APGD-T 0%, C&W-Linf 0%, Square 0%. Ceilings leave room for seeds. Minimal-perturbation attacks
# (C&W-L2, DeepFool, FAB, JSMA) are scored by their distances in their own test files.
CEILING = {"fgsm": 0.15, "rfgsm": 0.30, "bim": 0.05, "illc": 0.40, "mifgsm": 0.05, "pgd": 0.03,
           "apgd-ce": 0.03, "apgd-t": 0.03, "cw-linf": 0.05, "square": 0.05}
EPS = 0.2


def robust_accuracy(attack, model, x, y, **kw) -> float:
    x_adv = attack(model, x, y, eps=EPS, norm="linf", generator=torch.Generator().manual_seed(0), **kw)
    return float((model(x_adv).argmax(1) == y).float().mean())


def noop(model, x, y, **_):
    return x.clone()


def test_every_registered_budget_attack_has_a_ceiling():
    budget_linf = {n for n, c in ATTACKS.items() if "linf" in c.norms and not c.minimal}
    assert budget_linf <= set(CEILING), budget_linf - set(CEILING)


@pytest.mark.parametrize("name", sorted(CEILING))
def test_linf_effectiveness(name, digits_mlp, digits):
    _, _, x, y = digits
    clean = float((digits_mlp(x).argmax(1) == y).float().mean())
    acc = robust_accuracy(ATTACKS[name](), digits_mlp, x, y)
    assert clean > 0.93
    assert acc <= CEILING[name], f"{name}: robust accuracy {acc:.3f} > ceiling {CEILING[name]} (clean {clean:.3f})"


def test_noop_attack_fails_the_effectiveness_threshold(digits_mlp, digits):
    _, _, x, y = digits
    assert robust_accuracy(noop, digits_mlp, x, y) > max(CEILING.values())


def test_iterative_beats_single_step(digits_mlp, digits):
    _, _, x, y = digits
    eps = 0.1
    accs = {n: float((digits_mlp(ATTACKS[n]()(digits_mlp, x, y, eps=eps)).argmax(1) == y).float().mean())
            for n in ("fgsm", "bim", "pgd")}
    assert accs["pgd"] <= accs["fgsm"] and accs["bim"] <= accs["fgsm"], accs


@pytest.mark.parametrize("name", ["fgsm", "bim", "pgd", "mifgsm"])
def test_targeted_reaches_target(name, digits_mlp, digits):
    _, _, x, y = digits
    target = (y + 1) % 10
    x_adv = ATTACKS[name]()(digits_mlp, x, y, eps=0.3, target=target, generator=torch.Generator().manual_seed(0))
    hit = float((digits_mlp(x_adv).argmax(1) == target).float().mean())
    floor = 0.3 if name == "fgsm" else 0.8
    assert hit >= floor, f"{name} targeted success {hit:.3f} < {floor}"


def test_pgd_restarts_only_improve(digits_mlp, digits):
    _, _, x, y = digits
    pgd = ATTACKS["pgd"]
    one = robust_accuracy(pgd(steps=5, step_size=0.01), digits_mlp, x, y)
    many = robust_accuracy(pgd(steps=5, step_size=0.01, restarts=5), digits_mlp, x, y)
    assert many <= one


def test_early_stop_keeps_successes(digits_mlp, digits):
    _, _, x, y = digits
    pgd = ATTACKS["pgd"]
    full = robust_accuracy(pgd(steps=20), digits_mlp, x, y)
    early = robust_accuracy(pgd(steps=20, early_stop=True), digits_mlp, x, y)
    assert early <= full + 0.01
