"""``diagnose`` fires on deliberately masked models and stays quiet on an honest one (real digits)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from _helpers import fit_full_batch, run_cli
from gibbon import data, zoo
from gibbon.evaluation.diagnose import NO_SIGN, SUSPECTED, beats, diagnose

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


class Saturated(nn.Module):
    """Logits times 1000: what defensive distillation at a high temperature deploys."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 1000.0 * self.inner(x)


class OneBit(nn.Module):
    """1-bit input quantization in front of the model: a zero gradient almost everywhere."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x))


class Noisy(nn.Module):
    """Gaussian noise on the input at every call: a randomized defense."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x + 0.3 * torch.randn_like(x))


class Detached(nn.Module):
    """A front end that leaves autograd (think NumPy or PIL inside forward)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.detach())


def _run(model, test_set, **kw):
    return diagnose(model, test_set, eps=EPS, n=N, square_queries=QUERIES, probe_samples=100,
                    **{"suite": None, **kw})


def _finding(report, check):
    return next(f for f in report.findings if f.check == check)


def _flagged(report):
    return {f.check for f in report.flagged()}


def test_honest_model_shows_no_sign_of_masking(honest, test_set):
    report = _run(honest, test_set)
    assert report.verdict == NO_SIGN, report.checklist()
    acc = report.accuracies
    assert acc["PGD-100 unbounded"]["accuracy"] == 0.0
    assert acc["PGD-100"]["accuracy"] < acc["clean"]["accuracy"] - 0.3  # the attacks did run


def test_saturated_softmax_is_flagged_with_the_margin_loss_advice(honest, test_set):
    report = _run(Saturated(honest), test_set)
    assert report.verdict == SUSPECTED
    gradients = next(f for f in report.findings if f.check == "gradients")
    assert gradients.flagged and gradients.evidence["saturated_fraction"] > 0.5, gradients.evidence
    assert "margin" in gradients.advice
    # the scale-invariant DLR loss still works, as on a distilled network
    assert report.accuracies["APGD-DLR"]["accuracy"] < report.accuracies["FGSM"]["accuracy"] - 0.2


def test_quantizing_front_end_is_flagged_with_bpda_advice(honest, test_set):
    report = _run(OneBit(honest), test_set)
    flagged = _flagged(report)
    assert {"gradients", "finite-differences"} <= flagged, report.checklist()
    gradients = next(f for f in report.findings if f.check == "gradients")
    assert "BPDA" in gradients.advice and gradients.evidence["zero_but_not_flat"] > 10
    fd = next(f for f in report.findings if f.check == "finite-differences")
    assert fd.evidence["autograd_zero_where_loss_moved"] > 0.1 * fd.evidence["pairs"], fd.evidence


def test_randomized_model_is_flagged_with_eot_advice(honest, test_set):
    report = _run(Noisy(honest), test_set)
    finding = next(f for f in report.findings if f.check == "randomized-outputs")
    assert finding.flagged and finding.evidence["predictions_changed"] > 0 and "EOT" in finding.advice


def test_cut_gradient_path_is_flagged(honest, test_set):
    report = _run(Detached(honest), test_set)
    assert {"gradients", "finite-differences"} <= _flagged(report)
    assert _finding(report, "finite-differences").evidence["cut"] is not None  # no gradient path
    assert "error" in report.accuracies["PGD-100"]  # the gradient attacks could not run: recorded, not crashed
    assert "black-box-beats-white-box" in _flagged(report)  # Square still works
    # straight-through gradients see through the detach: the adaptive accuracy is the honest model's
    honest_pgd = _run(honest, test_set, remedies="none").accuracies["PGD-100"]["accuracy"]
    assert [r["name"] for r in report.remedies] == ["bpda"], report.remedies
    assert report.adaptive_robust_accuracy <= honest_pgd + 0.03, (report.adaptive_robust_accuracy, honest_pgd)


def test_beats_needs_separated_intervals():
    assert not beats({"interval": [0.0, 0.02]}, {"interval": [0.0, 0.03]})
    assert beats({"interval": [0.1, 0.2]}, {"interval": [0.25, 0.4]})


def test_cli_diagnose_writes_json_and_exits_zero_when_suspected(honest, tmp_path, monkeypatch, capsys):
    train = data.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = zoo.build("mlp-200-200", train)
    weights = tmp_path / "honest.safetensors"
    zoo.save(fit_full_batch(net, train.x, train.y, steps=100), weights, {"dataset": "digits"}, dataset=train)
    out = tmp_path / "diagnosis.json"
    code = run_cli(monkeypatch, "diagnose", "--model", str(weights), "--dataset", "digits", "--eps", "0.1",
                   "--n", "60", "--square-queries", "50", "--suite", "none", "--json", str(out))
    assert code == 0
    saved = json.loads(out.read_text())
    assert saved["verdict"] in (NO_SIGN, SUSPECTED) and len(saved["findings"]) == 13
    assert 0 <= saved["adaptive_robust_accuracy"] <= saved["accuracies"]["PGD-100"]["accuracy"]
    assert isinstance(saved["masking_suspected"], bool)
    printed = capsys.readouterr().out  # every check keeps its marker ("[ok]" is not taken as a rich style)
    assert sum(line.startswith(("[ok] ", "[!!] ")) for line in printed.splitlines()) == 13, printed
    assert run_cli(monkeypatch, "diagnose", "--model", str(weights), "--dataset", "digits", "--eps", "0") == 2
    squeezed = tmp_path / "squeezed.json"
    code = run_cli(monkeypatch, "diagnose", "--model", str(weights), "--dataset", "digits", "--eps", "0.1", "--n", "60",
                   "--square-queries", "50", "--suite", "none", "--transform", "bit-depth:bits=1", "--json", str(squeezed))
    assert code == 0  # exit 0 either way
    saved = json.loads(squeezed.read_text())
    assert saved["verdict"] == SUSPECTED and saved["transform"] == "bit-depth:bits=1"
    assert run_cli(monkeypatch, "diagnose", "--model", str(weights), "--dataset", "digits",
                   "--transform", "blur:sigma=1") == 2
