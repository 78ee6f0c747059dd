"""Issue 23's findings outside the server, one test each (docs/security.md lists them)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.zoo import load, save

from _helpers import run_cli

EVIL_MODULE = '''
from pathlib import Path
from torch import nn
Path(__file__).with_name("IMPORTED").write_text("the card's module was imported")

def make():
    Path(__file__).with_name("CALLED").write_text("the card's factory ran")
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
'''


@pytest.fixture
def card_with_code(tmp_path, monkeypatch):
    """A weights + card pair whose card names a factory with side effects (files it writes)."""
    (tmp_path / "gibbon_test_evil_card.py").write_text(EVIL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    weights = save(net, tmp_path / "m.safetensors", {"factory": "gibbon_test_evil_card:make", "dataset": "digits",
                                                     "input_shape": [1, 8, 8], "num_classes": 10})
    yield weights, tmp_path
    sys.modules.pop("gibbon_test_evil_card", None)


def test_a_card_naming_code_loads_only_with_trust_code(card_with_code):
    weights, folder = card_with_code
    with pytest.raises(GibbonInputError, match="trust_code=True.*--trust-code"):
        load(weights)
    # nothing of the card's code ran: not imported, not called
    assert not (folder / "IMPORTED").exists() and not (folder / "CALLED").exists()
    assert "gibbon_test_evil_card" not in sys.modules
    with pytest.raises(GibbonInputError, match="trust_code"):
        load(weights, trust_code="yes")  # only the literal True opts in
    model = load(weights, trust_code=True)
    assert (folder / "CALLED").exists() and model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("command", [["evaluate", "--attack", "fgsm", "--eps", "0.1"], ["attack", "--attack", "fgsm",
                                     "--eps", "0.1"], ["diagnose", "--eps", "0.1"]])
def test_cli_refuses_a_card_naming_code_without_trust_code(card_with_code, monkeypatch, capsys, command):
    weights, folder = card_with_code
    args = [command[0], "--model", str(weights), "--dataset", "digits", "--n", "8", *command[1:]]
    if command[0] == "attack":
        args += ["--out", str(folder / "adv.npz")]
    assert run_cli(monkeypatch, *args) == 2
    err = capsys.readouterr().err
    assert "--trust-code" in err and "Traceback" not in err
    assert not (folder / "IMPORTED").exists()


def test_cli_trust_code_opts_in(card_with_code, monkeypatch, capsys):
    weights, folder = card_with_code
    assert run_cli(monkeypatch, "evaluate", "--model", str(weights), "--dataset", "digits", "--n", "8",
                   "--attack", "fgsm", "--eps", "0.1", "--trust-code") == 0
    assert (folder / "CALLED").exists()


def _skops_variants(tmp_path):
    """A good skops file of gibbon's, and damaged copies of it (each with the good card beside)."""
    import json
    import shutil
    import zipfile

    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from gibbon.oracles import SklearnModel, save_sklearn

    rng = np.random.default_rng(0)
    good = save_sklearn(SklearnModel(LogisticRegression(max_iter=50).fit(rng.random((30, 64)), np.arange(30) % 3),
                                     [1, 8, 8]), tmp_path / "good.skops")
    with zipfile.ZipFile(good) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    schema = json.loads(members["schema.json"])
    variants = {
        "list-schema": {"schema.json": b"[]"},
        "no-protocol": {"schema.json": b"{}"},
        "future-protocol": {**members, "schema.json": json.dumps({**schema, "protocol": 999}).encode()},
        "arrays-missing": {"schema.json": members["schema.json"]},
        "arrays-truncated": {k: v[: len(v) // 2] if k.endswith(".npy") else v for k, v in members.items()},
    }
    for name, content in variants.items():
        with zipfile.ZipFile(tmp_path / f"{name}.skops", "w") as archive:
            for member, data in content.items():
                archive.writestr(member, data)
        shutil.copy(good.with_suffix(".json"), tmp_path / f"{name}.json")
    return list(variants)


def test_a_damaged_skops_file_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from gibbon.oracles import load_sklearn

    for name in _skops_variants(tmp_path):
        with pytest.raises(GibbonInputError, match="cannot read .* as a scikit-learn model|not a skops file"):
            load_sklearn(tmp_path / f"{name}.skops")
        assert run_cli(monkeypatch, "evaluate", "--oracle", f"sklearn:{tmp_path / name}.skops", "--dataset", "digits",
                       "--attack", "square", "--eps", "0.1", "--n", "4") == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err, err


@pytest.fixture(scope="module")
def digits_weights(tmp_path_factory):
    from _helpers import fit_full_batch

    from gibbon import data, zoo

    train = data.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = zoo.build("mlp-200-200", train)
    path = tmp_path_factory.mktemp("targeted") / "mlp.safetensors"
    save(fit_full_batch(net, train.x, train.y, steps=100), path, dataset=train)
    return path


def test_evaluate_has_targeted_modes_for_jsma_and_others(digits_weights, tmp_path, monkeypatch, capsys):
    import json

    base = ["evaluate", "--model", str(digits_weights), "--dataset", "digits", "--n", "20"]
    assert run_cli(monkeypatch, *base, "--attack", "jsma", "--norm", "l0", "--eps", "10") == 2
    assert "--target" in capsys.readouterr().err
    reports = {}
    for target in ("random", "least-likely", "3"):
        out = tmp_path / f"{target}.json"
        assert run_cli(monkeypatch, *base, "--attack", "pgd:steps=20", "--eps", "0.3", "--target", target,
                       "--json", str(out)) == 0
        reports[target] = json.loads(out.read_text())
    untargeted = tmp_path / "untargeted.json"
    assert run_cli(monkeypatch, *base, "--attack", "pgd:steps=20", "--eps", "0.3", "--json", str(untargeted)) == 0
    # reaching a chosen class is harder than leaving the true one: targeted robust accuracy is higher
    worst = lambda r: r["worst_case"][0]["robust_accuracy"]  # noqa: E731
    for target, report in reports.items():
        assert worst(report) >= worst(json.loads(untargeted.read_text())), target
    out = tmp_path / "jsma.json"
    assert run_cli(monkeypatch, *base, "--attack", "jsma", "--norm", "l0", "--eps", "10", "--target", "random",
                   "--json", str(out)) == 0
    assert worst(json.loads(out.read_text())) < 0.9  # JSMA does reach random targets on most digits
    assert run_cli(monkeypatch, *base, "--attack", "pgd", "--eps", "0.3", "--target", "banana") == 2
    assert run_cli(monkeypatch, *base, "--attack", "pgd", "--eps", "0.3", "--target", "12") == 2
