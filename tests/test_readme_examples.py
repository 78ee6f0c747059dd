"""The README's "Any model, white-box" examples, run as written: every `gibbon ...` command of its shell
block and its Python block, in a folder holding the files they name (cnn.onnx, r18.safetensors and
CIFAR-10-format data made here)."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import torch
from _helpers import fit_full_batch, one_thread, run_cli, write_cifar  # noqa: F401  (one_thread: a module fixture)

for _package in ("onnx2torch", "timm"):  # found, not imported: they import torchvision (see zoo.foreign)
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed (pip install 'gibbon[onnx,vision]')", allow_module_level=True)

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(title)
    end = text.find("\n### ", start + 1)
    end = min(e for e in (end, text.find("\n## ", start + 1)) if e != -1)
    return text[start:end]


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    joined = block.replace("\\\n", " ")
    return [shlex.split(line.split("#")[0])[1:] for line in joined.splitlines() if line.startswith("gibbon ")]


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    """The files the examples name, made here: a digits CNN as cnn.onnx, resnet18 weights, CIFAR files."""
    from safetensors.torch import save_file

    from gibbon import data
    from gibbon.oracles.onnx import export_onnx
    from gibbon.zoo import foreign

    train = data.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(8 * 64, 10))
    export_onnx(fit_full_batch(cnn, train.x, train.y, steps=100), tmp_path / "cnn.onnx", (1, 8, 8), dynamo=False)
    r18 = foreign.load_torchvision("resnet18", num_classes=10)
    save_file({k: v.contiguous() for k, v in r18.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    monkeypatch.setenv("GIBBON_DATA", str(write_cifar(tmp_path / "data", rows=8)))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_any_model_commands_run_as_written(folder, monkeypatch):
    commands = _commands(_blocks(_section("### Any model, white-box"), "bash")[0])
    assert len(commands) >= 3 and {c[c.index("--model") + 1].split(":")[0] for c in commands} >= {
        "onnx", "timm", "torchvision"}
    for args in commands:
        assert run_cli(monkeypatch, *args) == 0, args


def test_any_model_python_runs_as_written(folder):
    (code,) = _blocks(_section("### Any model, white-box"), "python")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the README's own lines
    assert not scope["model"].training and isinstance(scope["net"], torch.nn.Module)
