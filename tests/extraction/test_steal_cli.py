"""`gibbon steal` against a local victim: the copy, its card, the curve and plot, the resumable answer
store, and one-line errors for bad settings."""

from __future__ import annotations

import json

import pytest
from _helpers import fit_full_batch, one_thread, run_cli  # noqa: F401  (one_thread: a module fixture)

from gibbon import data, zoo
from gibbon.zoo.io import read_card


@pytest.fixture(scope="module")
def victim_path(tmp_path_factory):
    import torch

    train = data.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = zoo.build("mlp-200-200", train)
    fit_full_batch(net, train.x, train.y)
    return zoo.save(net, tmp_path_factory.mktemp("victim") / "victim.safetensors", dataset=train)


def test_steal_trains_a_copy_with_its_curve_and_resumes_for_free(monkeypatch, tmp_path, victim_path):
    out = tmp_path / "copy.safetensors"
    args = ["steal", "--oracle", str(victim_path), "--budget", "500", "--dataset", "digits", "--pool", "digits:train",
            "--arch", "mlp-200-200", "--min-steps", "200", "--curve", "50,200", "--fidelity-queries", "100", "--out", str(out),
            "--json", str(tmp_path / "steal.json"), "--plot", str(tmp_path / "curve.png")]
    assert run_cli(monkeypatch, *args) == 0
    summary = json.loads((tmp_path / "steal.json").read_text())
    assert summary["queries_spent"] == 500 and summary["answers"] == 400 and summary["kind"] == "probabilities"
    assert [p["queries"] for p in summary["curve"]] == [50, 200, 400]
    assert all(p["fidelity"] is not None for p in summary["curve"])  # the bought labels score every curve point
    assert summary["fidelity"] == pytest.approx(summary["curve"][-1]["fidelity"])
    assert summary["fidelity"] >= 0.85 and summary["accuracy"] >= 0.85  # measured 0.93 / 0.93
    assert (tmp_path / "curve.png").stat().st_size > 1000 and (tmp_path / "copy.answers.npz").exists()
    card = read_card(out)
    assert card["stolen"]["method"] == "knockoff" and card["architecture"] == "mlp-200-200"
    assert zoo.accuracy(zoo.load(out), data.load("digits", "test")) == pytest.approx(summary["accuracy"])
    assert run_cli(monkeypatch, *args) == 0  # the answers are in the store: only the fidelity check is paid
    assert json.loads((tmp_path / "steal.json").read_text())["queries_spent"] == 100


def test_jacobian_and_equation_methods(monkeypatch, tmp_path, victim_path):
    out = tmp_path / "jac.safetensors"
    assert run_cli(monkeypatch, "steal", "--oracle", str(victim_path), "--budget", "400", "--method", "jacobian",
                   "--dataset", "digits", "--arch", "mlp-200-200", "--epochs", "2", "--min-steps", "100", "--out", str(out),
                   "--json", str(tmp_path / "jac.json")) == 0
    summary = json.loads((tmp_path / "jac.json").read_text())
    assert summary["queries_spent"] <= 400 and summary["stopped_by_budget"] and summary["accuracy"] >= 0.5
    linear = tmp_path / "lr.safetensors"
    train = data.load("digits", "train")
    fit = fit_full_batch(zoo.build("softmax-regression", train), train.x, train.y)
    zoo.save(fit, linear, dataset=train)
    assert run_cli(monkeypatch, "steal", "--oracle", str(linear), "--budget", "325", "--method", "equation",
                   "--dataset", "digits", "--fidelity-queries", "100", "--out", str(tmp_path / "eq.safetensors"),
                   "--json", str(tmp_path / "eq.json")) == 0
    summary = json.loads((tmp_path / "eq.json").read_text())
    assert summary["queries_spent"] == 325 and summary["fidelity"] == 1.0


@pytest.mark.parametrize("extra, message", [
    (["--budget", "0"], "--budget must be"),
    (["--budget", "-5"], "--budget must be"),
    (["--budget", "100", "--method", "magic"], "--method must be one of"),
    (["--budget", "100", "--fidelity-queries", "100"], "--fidelity-queries"),
    (["--budget", "100", "--curve", "50,200"], "--curve takes"),
    (["--budget", "5000"], "the pool has 1197 images"),
])
def test_bad_settings_are_one_line_errors(monkeypatch, capsys, tmp_path, victim_path, extra, message):
    code = run_cli(monkeypatch, "steal", "--oracle", str(victim_path), "--dataset", "digits", "--pool", "digits:train",
                   "--out", str(tmp_path / "c.safetensors"), *extra)
    err = capsys.readouterr().err
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err


def test_a_victim_of_another_dataset_is_one_line_before_any_query(monkeypatch, capsys, tmp_path, victim_path):
    code = run_cli(monkeypatch, "steal", "--oracle", str(victim_path), "--dataset", "mnist", "--budget", "100",
                   "--out", str(tmp_path / "c.safetensors"))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "does not accept mnist inputs" in err and "Traceback" not in err
    assert not (tmp_path / "c.answers.npz").exists()
