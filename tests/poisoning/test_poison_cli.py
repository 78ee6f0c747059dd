"""`gibbon poison flip | collision | brew | influence`: each runs end to end on digits, writes its JSON
and figure, and refuses bad settings in one line."""

from __future__ import annotations

import json

import pytest
from _helpers import run_cli
from _poisoning import train_digits

from gibbon import data, zoo


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    train = data.load("digits", "train")
    paths = {}
    for arch, steps in (("softmax-regression", 150), ("mlp-200-200", 150)):
        paths[arch] = folder / f"{arch}.safetensors"
        zoo.save(train_digits(arch, train, steps=steps), paths[arch], {"architecture": arch}, dataset=train)
    return paths


def test_flip_curve(monkeypatch, tmp_path):
    code = run_cli(monkeypatch, "poison", "flip", "--dataset", "digits", "--arch", "softmax-regression",
                   "--epochs", "5", "--rate", "0.5,0.8", "--out-dir", str(tmp_path))
    assert code == 0
    runs = json.loads((tmp_path / "flip.json").read_text())["runs"]
    # 80% of labels moved to a random other class leaves a minority of right labels: accuracy must fall
    assert runs["0.8"]["accuracy"] < runs["0.0"]["accuracy"] - 0.2, runs
    assert (tmp_path / "flip.png").stat().st_size > 1000


def test_influence_with_leave_one_out(monkeypatch, tmp_path, saved):
    code = run_cli(monkeypatch, "poison", "influence", "--model", str(saved["softmax-regression"]), "--dataset",
                   "digits", "--k", "4", "--loo", "12", "--weight-decay", "0.001", "--out-dir", str(tmp_path))
    assert code == 0
    report = json.loads((tmp_path / "influence.json").read_text())
    assert len(report["helpful"]) == 4 and report["harmful"][0]["influence"] > 0 > report["helpful"][0]["influence"]
    assert report["leave_one_out"]["pearson"] >= 0.9  # measured 0.99 after the L-BFGS refit
    assert (tmp_path / "influence.png").exists()


def test_collision_and_brew_run(monkeypatch, tmp_path, saved):
    code = run_cli(monkeypatch, "poison", "collision", "--extractor", str(saved["mlp-200-200"]), "--dataset", "digits",
                   "--classes", "3,8", "--per-class", "60", "--n-targets", "4", "--steps", "200", "--beta0", "0.01",
                   "--out-dir", str(tmp_path / "c"))
    assert code == 0
    result = json.loads((tmp_path / "c" / "collision.json").read_text())
    assert len(result["attack"]["successes"]) == 4
    assert result["attack"]["success_rate"] >= result["control"]["success_rate"]
    assert (tmp_path / "c" / "collision.png").exists()
    code = run_cli(monkeypatch, "poison", "brew", "--model", str(saved["mlp-200-200"]), "--arch", "softmax-regression",
                   "--dataset", "digits", "--epochs", "2", "--n-targets", "1", "--steps", "5", "--budget", "0.05",
                   "--out-dir", str(tmp_path / "b"))
    assert code == 0
    brew = json.loads((tmp_path / "b" / "brew.json").read_text())
    assert brew["attack"]["linf"] <= 16 / 255 + 1e-6


def test_poison_cli_errors_are_one_line(monkeypatch, capsys, saved):
    model = str(saved["softmax-regression"])
    for args, message in ((["poison", "influence", "--model", model, "--dataset", "digits", "--test-index", "999"],
                           "--test-index must be in"),
                          (["poison", "influence", "--model", model, "--dataset", "digits", "--method", "newton"],
                           "method"),
                          (["poison", "brew", "--model", model, "--arch", "lenet5", "--dataset", "digits",
                            "--budget", "2"], "budget"),
                          (["poison", "collision", "--extractor", model, "--dataset", "digits", "--classes", "a,b"],
                           "--classes must be class indices")):
        assert run_cli(monkeypatch, *args) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


