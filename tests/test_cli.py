"""The `gibbon` command end to end on the digits data (small, fast), and its error contract."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from gibbon.cli import main


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["gibbon", *args])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "mlp.safetensors"
    mp = pytest.MonkeyPatch()
    sys_argv = sys.argv
    try:
        sys.argv = ["gibbon", "train", "--arch", "mlp-200-200", "--dataset", "digits", "--epochs", "8",
                    "--out", str(path), "--batch-size", "64"]
        try:
            main()
        except SystemExit as exc:
            assert exc.code in (0, None)
    finally:
        sys.argv = sys_argv
        mp.undo()
    return path


def test_train_writes_weights_and_card(trained_path):
    card = json.loads(trained_path.with_suffix(".json").read_text())
    assert trained_path.exists()
    assert card["architecture"] == "mlp-200-200" and card["dataset"] == "digits"
    assert card["clean_test_accuracy"] > 0.9


def test_train_takes_the_optimizer(tmp_path, monkeypatch, capsys):
    path = tmp_path / "sgd.safetensors"
    code, stdout, _ = run_cli(monkeypatch, capsys, "train", "--arch", "mlp-200-200", "--dataset", "digits",
                              "--epochs", "4", "--optimizer", "sgd-nesterov", "--lr", "0.05", "--out", str(path))
    assert code == 0, stdout
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["optimizer"] == "sgd-nesterov" and card["clean_test_accuracy"] > 0.85
    code, _, err = run_cli(monkeypatch, capsys, "train", "--arch", "mlp-200-200", "--dataset", "digits",
                           "--optimizer", "rmsprop", "--out", str(path))
    assert code == 2 and "--optimizer must be one of adam, sgd, sgd-nesterov" in " ".join(err.split())


def test_evaluate_prints_table_and_writes_json(trained_path, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report.json"
    code, stdout, _ = run_cli(monkeypatch, capsys, "evaluate", "--model", str(trained_path), "--dataset", "digits",
                              "--n", "100", "--attack", "fgsm", "--attack", "pgd:steps=10", "--eps", "0.05",
                              "--eps", "0.3", "--json", str(out))
    assert code == 0, stdout
    assert "pgd" in stdout and "worst" in stdout.lower()
    report = json.loads(out.read_text())
    for key in ("schema_version", "clean_accuracy", "n", "seed", "versions", "results", "worst_case"):
        assert key in report
    assert report["n"] == 100
    pgd_03 = [r for r in report["results"] if r["attack"] == "pgd" and r["eps"] == 0.3][0]
    assert pgd_03["robust_accuracy"] < 0.1 < report["clean_accuracy"]
    assert {"attack", "params", "eps", "norm", "robust_accuracy", "seconds", "gradients"} <= set(pgd_03)


def test_attack_writes_npz(trained_path, tmp_path, monkeypatch, capsys):
    out = tmp_path / "adv.npz"
    code, stdout, _ = run_cli(monkeypatch, capsys, "attack", "--model", str(trained_path), "--dataset", "digits",
                              "--attack", "pgd:steps=20", "--eps", "0.3", "--target", "least-likely", "--n", "50",
                              "--out", str(out))
    assert code == 0, stdout
    with np.load(out, allow_pickle=False) as f:
        assert {"x", "x_adv", "y", "pred_adv", "success", "distance", "settings"} <= set(f.files)
        assert f["x_adv"].shape == (50, 1, 8, 8)
        assert f["success"].mean() > 0.8
        assert np.abs(f["x_adv"] - f["x"]).max() <= 0.3 + 1e-6
        assert json.loads(str(f["settings"]))["attack"] == "pgd"


@pytest.mark.parametrize("args,needle", [
    (["evaluate", "--dataset", "digits", "--attack", "nosuch", "--eps", "0.1"], "unknown attack"),
    (["evaluate", "--dataset", "nosuch", "--attack", "fgsm", "--eps", "0.1"], "dataset"),
    (["evaluate", "--dataset", "digits", "--attack", "bim", "--norm", "l2", "--eps", "0.1"], "--norm linf"),
    (["evaluate", "--dataset", "digits", "--attack", "fgsm", "--eps", "-0.1"], "eps"),
    (["evaluate", "--dataset", "digits", "--attack", "pgd:stepz=3", "--eps", "0.1"], "options are"),
])
def test_bad_arguments_exit_2_with_one_line(args, needle, trained_path, monkeypatch, capsys):
    args = args[:1] + ["--model", str(trained_path)] + args[1:]
    code, _, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err


def test_missing_model_file(monkeypatch, capsys, tmp_path):
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--model", str(tmp_path / "none.safetensors"),
                           "--dataset", "digits", "--attack", "fgsm", "--eps", "0.1")
    assert code == 2 and "error" in err


def test_model_that_does_not_fit_the_data(trained_path, monkeypatch, capsys):
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", "--model", str(trained_path), "--dataset", "mnist",
                           "--n", "10", "--attack", "fgsm", "--eps", "0.1")
    assert code == 2 and "model" in err


def test_listings(monkeypatch, capsys):
    code, stdout, _ = run_cli(monkeypatch, capsys, "zoo")
    assert code == 0 and "madry-cnn" in stdout and "logistic-regression" in stdout
    code, stdout, _ = run_cli(monkeypatch, capsys, "reproduce")
    assert code == 0 and "madry2018-natural" in stdout
    code, stdout, _ = run_cli(monkeypatch, capsys, "attacks")
    assert code == 0 and "mifgsm" in stdout
