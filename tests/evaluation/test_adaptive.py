"""Adaptive evaluation on hostile and masked models (real digits): never a traceback, every
masked model flagged, remedies that are not no-ops, and adaptive accuracy close to a
hand-written adaptive attack."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import fit_full_batch, run_cli
from gibbon import data, zoo
from gibbon.attacks import PGD
from gibbon.core.checks import GibbonInputError
from gibbon.defenses import BPDA, EOT, InputTransformed
from gibbon.evaluation import evaluate
from gibbon.evaluation.diagnose import NO_SIGN, SUSPECTED, diagnose
from gibbon.transfer._batches import craft

EPS, N, QUERIES = 0.1, 150, 200


@pytest.fixture(scope="module")
def honest():
    train = data.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    return fit_full_batch(net, train.x, train.y, steps=200)


@pytest.fixture(scope="module")
def test_set():
    return data.load("digits", "test")


class Front(nn.Module):
    """``inner(front(x))``, written the way users write defenses (no InputTransformed)."""

    def __init__(self, inner, front):
        super().__init__()
        self.inner, self.front = inner, front

    def forward(self, x):
        return self.inner(self.front(x))


class Wrapped(nn.Module):
    """``post(inner(x), x)``: odd output types and failures."""

    def __init__(self, inner, post):
        super().__init__()
        self.inner, self.post = inner, post

    def forward(self, x):
        return self.post(self.inner(x), x)


class HFOutput:
    """What a HuggingFace model returns: an object with ``.logits``."""

    def __init__(self, logits):
        self.logits = logits


def _raise_on_bright(logits, x):
    if (x > 0.95).float().mean() > 0.15:
        raise ValueError("input too bright")
    return logits


def _nan_on_bright(logits, x):
    bright = ((x > 0.95).float().flatten(1).mean(dim=1) > 0.15).unsqueeze(1)
    return torch.where(bright, torch.full_like(logits, float("nan")), logits)


HOSTILE = {
    "threshold": lambda m: Front(m, lambda x: (x > 0.5).float()),
    "4-level rounding": lambda m: Front(m, lambda x: torch.round(x * 3) / 3),
    "random threshold": lambda m: Front(m, lambda x: (x > torch.rand_like(x)).float()),
    "thermometer": lambda m: Front(m, lambda x: (x.unsqueeze(-1) > torch.tensor([0.25, 0.5, 0.75])).float().mean(-1)),
    "gaussian noise": lambda m: Front(m, lambda x: x + 0.3 * torch.randn_like(x)),
    "detached": lambda m: Front(m, lambda x: x.detach()),
    "numpy round trip": lambda m: Front(m, lambda x: torch.from_numpy(np.round(x.detach().numpy()))),
    "logits x 1e4": lambda m: Wrapped(m, lambda out, x: 1e4 * out),
    "tuple": lambda m: Wrapped(m, lambda out, x: (out, x.flatten(1))),
    "dict": lambda m: Wrapped(m, lambda out, x: {"logits": out, "hidden": x}),
    "HF object": lambda m: Wrapped(m, lambda out, x: HFOutput(out)),
    "probabilities": lambda m: Wrapped(m, lambda out, x: out.softmax(dim=1)),
    "raises on some inputs": lambda m: Wrapped(m, _raise_on_bright),
    "NaN on some inputs": lambda m: Wrapped(m, _nan_on_bright),
}
MASKED = ("threshold", "4-level rounding", "random threshold", "thermometer", "gaussian noise", "detached",
          "numpy round trip", "logits x 1e4", "probabilities", "raises on some inputs", "NaN on some inputs")


def _run(model, test_set, **kw):
    return diagnose(model, test_set, eps=EPS, n=N, square_queries=QUERIES, probe_samples=100,
                    **{"suite": None, **kw})


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_models_give_findings_not_tracebacks(name, honest, test_set):
    report = _run(HOSTILE[name](honest), test_set)
    assert 0.0 <= report.adaptive_robust_accuracy <= report.accuracies["clean"]["accuracy"]
    assert report.adaptive_robust_accuracy <= min(v["accuracy"] for k, v in report.accuracies.items()
                                                  if v.get("eps") == EPS) + 1e-9
    if name in MASKED:
        assert report.verdict == SUSPECTED, report.checklist()
    else:  # only the output's type differs from the honest model: same verdict, same numbers
        assert report.verdict == NO_SIGN, report.checklist()
        assert report.adaptive_robust_accuracy == _run(honest, test_set).adaptive_robust_accuracy


def test_failures_of_the_model_are_a_finding(honest, test_set):
    report = _run(HOSTILE["raises on some inputs"](honest), test_set)
    finding = next(f for f in report.findings if f.check == "model-errors")
    assert finding.flagged and finding.evidence["failed_samples"] > 0
    assert "input too bright" in finding.evidence["model_errors"][0]


def _hand_bpda(front, honest, test_set):
    """Ground truth: PGD-100 through BPDA written by hand, scored on the defended model."""
    defended = InputTransformed(front, honest)
    x, y = test_set.x[:N], test_set.y[:N]
    adv = craft(BPDA(defended), PGD(steps=100), x, y, eps=EPS, norm="linf", bounds=(0, 1), batch_size=250, seed=0)
    with torch.no_grad():
        return float(((defended(adv).argmax(1) == y) & (defended(x).argmax(1) == y)).float().mean())


class Rounding(nn.Module):
    def forward(self, x):
        return torch.round(x * 3) / 3


def test_bpda_remedy_is_not_a_no_op_and_matches_a_hand_written_attack(honest, test_set):
    model = HOSTILE["4-level rounding"](honest)
    off = _run(model, test_set, remedies="none")
    on = _run(model, test_set)
    truth = _hand_bpda(Rounding(), honest, test_set)
    white_box_off = min(off.accuracies[k]["accuracy"] for k in ("PGD-100", "APGD-CE", "APGD-DLR"))
    assert white_box_off > truth + 0.15, (white_box_off, truth)  # BPDA off: the gradient attacks see nothing
    (bpda,) = on.remedies
    assert bpda["name"] == "bpda" and bpda["accuracy"] <= truth + 0.05, (bpda, truth)  # on: the hand-written number
    assert on.adaptive_robust_accuracy <= truth + 0.05, (on.adaptive_robust_accuracy, truth)


def test_eot_remedy_averages_enough_draws_and_scores_the_mean(honest, test_set):
    model = HOSTILE["gaussian noise"](honest)
    off, on = _run(model, test_set, remedies="none"), _run(model, test_set)
    (eot,) = [r for r in on.remedies if r["name"].startswith("eot-")]
    draws = int(eot["name"].split("-")[1])
    assert draws >= 4, eot  # the measured gradient variance asks for several draws
    assert on.settings["scoring_draws"] == 10
    x, y = test_set.x[:N], test_set.y[:N]
    adv = craft(EOT(model, samples=20), PGD(steps=100), x, y, eps=EPS, norm="linf", bounds=(0, 1), batch_size=250,
                seed=0)
    with torch.no_grad():  # per sample: min(P[correct on x], P[correct on x_adv]), each over 10 draws
        on_clean = sum((model(x).argmax(1) == y).double() for _ in range(10)) / 10
        on_adv = sum((model(adv).argmax(1) == y).double() for _ in range(10)) / 10
    truth = float(torch.minimum(on_clean, on_adv).mean())
    assert on.adaptive_robust_accuracy <= truth + 0.05, (on.adaptive_robust_accuracy, truth)
    plain = off.accuracies["PGD-100"]["accuracy"]  # one noisy gradient per step: PGD without EOT
    assert eot["accuracy"] < plain - 0.1, (eot, plain)


def test_margin_remedy_on_a_saturated_softmax(honest, test_set):
    model = HOSTILE["logits x 1e4"](honest)
    on, off = _run(model, test_set), _run(model, test_set, remedies="none")
    truth = _run(honest, test_set, remedies="none").accuracies["PGD-100"]["accuracy"]  # PGD on the unscaled logits
    assert "margin" in [r["name"] for r in on.remedies]
    assert on.adaptive_robust_accuracy <= truth + 0.05
    assert off.accuracies["PGD-100"]["accuracy"] > truth + 0.3  # the plain cross-entropy PGD stalls


def test_no_gradient_at_all_falls_back_to_gradient_free_and_surrogate(honest, test_set):
    report = _run(HOSTILE["numpy round trip"](honest), test_set)
    names = [r["name"] for r in report.remedies]
    assert names[0] == "bpda" and not report.remedies[0]["attacks"]  # tried: nothing to see through
    assert {"gradient-free", "surrogate"} <= set(names), names
    assert report.adaptive_robust_accuracy < report.accuracies["clean"]["accuracy"] - 0.1


def test_honest_model_adaptive_is_never_above_the_reliable_suite(honest, test_set):
    report = _run(honest, test_set, suite="reliable")
    reliable = evaluate(honest, data.Dataset("digits", "test", test_set.x[:N], test_set.y[:N], test_set.classes,
                                             test_set.bounds, "sklearn"),
                        suite="reliable", eps=[EPS], progress=False).worst_case[0].robust_accuracy
    assert report.remedies == [] and report.verdict == NO_SIGN
    assert reliable - 0.01 <= report.adaptive_robust_accuracy <= reliable, (report.adaptive_robust_accuracy, reliable)


def test_bad_input_is_one_line_errors(honest, test_set):
    with pytest.raises(GibbonInputError, match="did you mean 'bpda'"):
        _run(honest, test_set, remedies="bpdaa")
    with pytest.raises(GibbonInputError, match="eps must be in"):
        diagnose(honest, test_set, eps=1.5, n=10)
    with pytest.raises(GibbonInputError, match="one score per class"):
        diagnose(Wrapped(honest, lambda out, x: out[:, :3]), test_set, eps=EPS, n=10)
    with pytest.raises(GibbonInputError, match="one row of class scores"):
        diagnose(Wrapped(honest, lambda out, x: out.flatten()), test_set, eps=EPS, n=10)


def test_evaluate_reports_an_attack_that_cannot_run_instead_of_crashing(honest, test_set):
    detached = HOSTILE["detached"](honest)
    report = evaluate(detached, (test_set.x[:40], test_set.y[:40]), ["pgd:steps=5"], eps=[EPS], progress=False)
    assert any("raised on" in w for w in report.warnings), report.warnings
    assert any("no input gradient" in w for w in report.warnings), report.warnings
    tupled = evaluate(HOSTILE["tuple"](honest), (test_set.x[:40], test_set.y[:40]), ["pgd:steps=5"], eps=[EPS],
                      progress=False)
    plain = evaluate(honest, (test_set.x[:40], test_set.y[:40]), ["pgd:steps=5"], eps=[EPS], progress=False)
    assert tupled.worst_case[0].robust_accuracy == plain.worst_case[0].robust_accuracy


def test_cli_evaluate_adaptive(tmp_path, monkeypatch, capsys):
    train = data.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = zoo.build("mlp-200-200", train)
    weights = tmp_path / "net.safetensors"
    zoo.save(fit_full_batch(net, train.x, train.y, steps=100), weights, {"dataset": "digits"}, dataset=train)
    out = tmp_path / "adaptive.json"
    assert run_cli(monkeypatch, "evaluate", "--model", str(weights), "--dataset", "digits", "--n", "60", "--eps", "0.1",
                   "--adaptive", "--suite", "quick", "--json", str(out)) == 0
    saved = json.loads(out.read_text())
    assert saved["adaptive"] is True and saved["masking_suspected"] is False
    assert 0 <= saved["adaptive_robust_accuracy"] <= saved["accuracies"]["APGD-CE"]["accuracy"]
    assert "adaptive robust accuracy at linf eps 0.1" in capsys.readouterr().out
    base = ["evaluate", "--model", str(weights), "--dataset", "digits", "--adaptive"]
    assert run_cli(monkeypatch, *base, "--eps", "0.1", "--remedies", "bpda,eott") == 2
    assert run_cli(monkeypatch, *base, "--eps", "1.5") == 2
    assert run_cli(monkeypatch, *base, "--eps", "0.1", "--eps", "0.2") == 2
    assert run_cli(monkeypatch, *base, "--eps", "0.1", "--attack", "pgd") == 2
    assert "did you mean 'eot'" in capsys.readouterr().err
