"""Models from outside gibbon, white-box: ONNX via onnx2torch, torchvision/timm by name, --normalize."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _helpers import fit_full_batch, one_thread, run_cli  # noqa: E402,F401

for _package in ("onnxruntime", "onnx2torch", "torchvision", "timm"):  # the onnx and vision extras
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed (pip install 'gibbon[onnx,vision]')", allow_module_level=True)

from gibbon import data as gdata  # noqa: E402
from gibbon.attacks.pgd import pgd  # noqa: E402
from gibbon.core.checks import GibbonInputError  # noqa: E402
from gibbon.oracles.onnx import OnnxModel, export_onnx  # noqa: E402
from gibbon.zoo import foreign  # noqa: E402
from gibbon.zoo.io import Normalized  # noqa: E402


def digits_cnn() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 10))


@pytest.fixture(scope="module")
def digits_test():
    return gdata.load("digits", "test")


@pytest.fixture(scope="module")
def trained(digits_test):
    train = gdata.load("digits", "train")
    return fit_full_batch(digits_cnn(), train.x, train.y, steps=150)


@pytest.fixture(scope="module")
def onnx_path(trained, tmp_path_factory):
    # the TorchScript exporter: onnx2torch 1.5.15 does not convert the dynamo exporter's opset-18 Reshape
    return export_onnx(trained, tmp_path_factory.mktemp("onnx") / "cnn.onnx", (1, 8, 8), dynamo=False)


@pytest.fixture()
def no_network(monkeypatch):
    """Any connection attempt fails the test: nothing may be downloaded."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ----------------------------------------------------------------------------- ONNX -> torch

def test_converted_onnx_agrees_with_onnxruntime_and_torch(trained, onnx_path, digits_test):
    model = foreign.load_onnx_torch(onnx_path)
    assert isinstance(model, torch.nn.Module) and not model.training
    assert model.gibbon_card["input_shape"] == [1, 8, 8] and model.gibbon_card["num_classes"] == 10
    assert model.gibbon_card["max_difference"] < 1e-4
    x = digits_test.x
    with torch.no_grad():
        converted, original = model(x), trained(x)
    runtime = OnnxModel(onnx_path)(x)
    assert float((converted - runtime).abs().max()) < 1e-4
    assert float((converted - original).abs().max()) < 1e-4
    assert torch.equal(converted.argmax(1), original.argmax(1))
    x_grad = x[:4].clone().requires_grad_(True)
    model(x_grad).sum().backward()  # white-box: real input gradients
    assert x_grad.grad is not None and float(x_grad.grad.abs().sum()) > 0


@pytest.mark.parametrize("eps", [0.3, 0.1])
def test_pgd_on_converted_onnx_matches_the_torch_model(trained, onnx_path, digits_test, eps):
    # measured (this CNN, clean 97.33%; digits test, 300 images, PGD-20 linf, seed-0 start): eps 0.3: 0.0% vs 0.0%;
    # eps 0.1: 30.67% vs 30.67%; the adversarial examples themselves identical (max difference 0)
    model = foreign.load_onnx_torch(onnx_path)
    x, y = digits_test.x, digits_test.y
    adv_original = pgd(trained, x, y, eps=eps, steps=20)
    adv_converted = pgd(model, x, y, eps=eps, steps=20)
    with torch.no_grad():
        clean = float((trained(x).argmax(1) == y).float().mean())
        acc_original = float((trained(adv_original).argmax(1) == y).float().mean())
        acc_converted = float((model(adv_converted).argmax(1) == y).float().mean())
    assert clean > 0.9 and acc_converted < clean - 0.4  # the attack works through the conversion
    assert abs(acc_converted - acc_original) <= 0.01
    assert float((adv_converted - x).abs().max()) <= eps + 1e-6


def test_a_conversion_that_disagrees_is_refused(onnx_path, monkeypatch):
    real_convert = foreign._convert

    def tampered(path):
        module = real_convert(path)
        with torch.no_grad():
            next(module.parameters()).add_(0.05)
        return module

    monkeypatch.setattr(foreign, "_convert", tampered)
    with pytest.raises(GibbonInputError, match="disagrees with onnxruntime"):
        foreign.load_onnx_torch(onnx_path)
    assert foreign.load_onnx_torch(onnx_path, check=False).gibbon_card["max_difference"] is None


def test_onnx_input_errors(tmp_path, trained):
    with pytest.raises(GibbonInputError, match="no ONNX model"):
        foreign.load_onnx_torch(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf")
    with pytest.raises(GibbonInputError, match="cannot load"):
        foreign.load_onnx_torch(junk)
    # the default (dynamo) exporter writes opset-18 Reshape, which onnx2torch 1.5.15 cannot convert: one line
    dynamo = export_onnx(trained, tmp_path / "dynamo.onnx", (1, 8, 8))
    with pytest.raises(GibbonInputError, match="onnx2torch cannot convert"):
        foreign.load_onnx_torch(dynamo)


# ----------------------------------------------------------------------------- torchvision and timm

def _attack_random_images(model, shape=(3, 32, 32), n=4, eps=8 / 255):
    x = torch.rand((n, *shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    x_adv = pgd(model, x, y, eps=eps, steps=5)
    with torch.no_grad():
        loss_clean = torch.nn.functional.cross_entropy(model(x), y)
        loss_adv = torch.nn.functional.cross_entropy(model(x_adv), y)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(loss_adv) > float(loss_clean)  # a no-op attack would leave the loss where it was
    return x


def test_torchvision_model_random_init_and_local_safetensors(tmp_path, no_network):
    model = foreign.load_torchvision("resnet18", num_classes=10)
    assert not model.training and model.fc.out_features == 10
    x = _attack_random_images(model)
    again = foreign.load_torchvision("resnet18", num_classes=10)  # seeded: the same random init
    weights = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    loaded = foreign.load_torchvision("resnet18", num_classes=10, weights=weights, seed=5)
    with torch.no_grad():
        assert torch.allclose(again(x), model(x)) and torch.allclose(loaded(x), model(x))
    with pytest.raises(GibbonInputError, match="do not fit"):
        foreign.load_torchvision("resnet18", num_classes=7, weights=weights)
    with pytest.raises(GibbonInputError, match="no model 'nope'"):
        foreign.load_torchvision("nope")


def test_timm_model_random_init(no_network):
    model = foreign.load_timm("resnet10t", num_classes=10)
    assert not model.training
    _attack_random_images(model)
    with pytest.raises(GibbonInputError, match="did you mean resnet10t"):
        foreign.load_timm("resnet10x")
    with pytest.raises(GibbonInputError, match="PATH.safetensors or 'pretrained'"):
        foreign.load_timm("resnet10t", weights="imagenet")


def test_specs_parse_name_options_and_weights(no_network):
    model = foreign.load_foreign("timm:resnet10t:num_classes=10,in_chans=1")
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 10)
    assert foreign.is_foreign_spec("onnx:m.onnx") and not foreign.is_foreign_spec("pkg.module:factory")
    assert not foreign.is_foreign_spec("torchvision.models:resnet18")  # a module path stays a module path
    for bad, message in [("torchvision:", "NAME"), ("timm:resnet10t:num_classes", "key=value"),
                         ("onnx:model.pt", "onnx:PATH.onnx")]:
        with pytest.raises(GibbonInputError, match=message):
            foreign.load_foreign(bad)


# ----------------------------------------------------------------------------- normalisation

def test_parse_normalization():
    assert foreign.parse_normalization("0.485,0.456,0.406:0.229,0.224,0.225") == (
        [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert foreign.parse_normalization("imagenet")[1] == [0.229, 0.224, 0.225]
    for bad in ["0.5", "0.5,0.5:0.2", "a:b", "0.5:0", "0.5:-1", "1:2:3", "nan:1"]:
        with pytest.raises(GibbonInputError, match="MEAN:STD"):
            foreign.parse_normalization(bad)


def test_attacking_normalized_in_pixels_is_attacking_the_net_on_normalized_inputs():
    """One signed-gradient step (PGD with one step from x) on Normalized(net) in pixel space equals
    the same step on net in normalised space with per-channel budget eps / std, mapped back."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 5))
    gen = torch.Generator().manual_seed(0)
    for trial in range(5):
        mean = torch.rand(3, generator=gen)
        std = 0.1 + torch.rand(3, generator=gen)
        model = foreign.normalize(net, (mean.tolist(), std.tolist()))
        assert isinstance(model, Normalized)
        x = torch.rand((6, 3, 8, 8), generator=gen)
        y = torch.randint(0, 5, (6,), generator=gen)
        eps = 0.05
        x_adv = pgd(model, x, y, eps=eps, steps=1, step_size=eps, random_start=False)
        m, s = mean.view(1, 3, 1, 1), std.view(1, 3, 1, 1)
        z = ((x - m) / s).requires_grad_(True)
        torch.nn.functional.cross_entropy(net(z), y, reduction="sum").backward()
        z_adv = z.detach() + (eps / s) * z.grad.sign()
        z_adv = torch.minimum(torch.maximum(z_adv, (0 - m) / s), (1 - m) / s)  # the pixel box, normalised
        assert torch.allclose((x_adv - m) / s, z_adv, atol=1e-5), trial
        assert float((x_adv - x).abs().max()) > eps / 2  # it moved


# ----------------------------------------------------------------------------- dict outputs

def test_pgd_evaluation_runs_on_a_dict_output_model(trained, digits_test):
    from gibbon.evaluation import evaluate

    class HuggingFaceStyle(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return {"logits": self.net(x), "hidden_states": x.flatten(1)}

    report = evaluate(HuggingFaceStyle(trained), digits_test, ["pgd:steps=10"], [0.1], progress=False)
    assert report.clean_accuracy > 0.9
    assert report.worst_case_accuracy(0.1) < report.clean_accuracy - 0.3  # the attack got through the dict


# ----------------------------------------------------------------------------- command line

def test_cli_attack_and_evaluate_an_onnx_model(onnx_path, tmp_path, monkeypatch, capsys):
    out = tmp_path / "adv.npz"
    code = run_cli(monkeypatch, "attack", "--model", f"onnx:{onnx_path}", "--dataset", "digits", "--attack",
                   "pgd:steps=10", "--eps", "0.1", "--n", "40", "--out", str(out))
    assert code == 0, capsys.readouterr().err
    with np.load(out, allow_pickle=False) as saved:
        assert saved["x_adv"].min() >= 0 and saved["x_adv"].max() <= 1 and saved["success"].mean() > 0.3
    code = run_cli(monkeypatch, "evaluate", "--model", f"onnx:{onnx_path}", "--dataset", "digits", "--n", "40",
                   "--attack", "pgd:steps=10", "--eps", "0.1", "--normalize", "0:1", "--json", str(tmp_path / "r.json"))
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "r.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "torchvision:nope"], "torchvision has no model 'nope'"),
    (["--model", "onnx:/no/such/model.onnx"], "no ONNX model"),
    (["--model", "onnx:PLACEHOLDER", "--normalize", "1,2:3"], "MEAN:STD"),
    (["--model", "PLACEHOLDER"], "--model onnx:"),
    (["--model", "torchvision:resnet18:num_classes=10", "--weights", "/no/such.safetensors"], "no weights file"),
])
def test_cli_bad_specs_are_one_line_errors(args, message, onnx_path, tmp_path, monkeypatch, capsys, no_network):
    args = [a.replace("PLACEHOLDER", str(onnx_path)) for a in args]
    code = run_cli(monkeypatch, "attack", *args, "--dataset", "digits", "--attack", "pgd", "--eps", "0.1",
                   "--n", "5", "--out", str(tmp_path / "a.npz"))
    err = capsys.readouterr().err
    one_line = " ".join(err.split())  # rich wraps the one message at the terminal's width
    assert code == 2 and message in one_line and "Traceback" not in err
    assert one_line.startswith("error:") and one_line.count("error:") == 1


def test_cli_module_factory_models_still_load(trained, tmp_path, monkeypatch, capsys):
    """``pkg.module:factory`` with --weights keeps working beside the new prefixes, --normalize included."""
    (tmp_path / "my_digits_models.py").write_text(
        "import torch\n"
        "def cnn():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),\n"
        "        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),\n"
        "        torch.nn.Flatten(), torch.nn.Linear(256, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    weights = tmp_path / "cnn.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(weights))
    for extra in ([], ["--normalize", "0.5:0.5"]):
        code = run_cli(monkeypatch, "attack", "--model", "my_digits_models:cnn", "--weights", str(weights),
                       "--dataset", "digits", "--attack", "pgd:steps=5", "--eps", "0.1", "--n", "10",
                       "--out", str(tmp_path / "a.npz"), *extra)
        assert code == 0, capsys.readouterr().err


def test_cli_attacks_a_timm_model_with_normalize(tmp_path, monkeypatch, capsys, no_network):
    out = tmp_path / "timm.npz"
    code = run_cli(monkeypatch, "attack", "--model", "timm:resnet10t:num_classes=10,in_chans=1", "--normalize",
                   "0.5:0.25", "--dataset", "digits", "--attack", "pgd:steps=3", "--eps", "0.1", "--n", "6",
                   "--out", str(out))
    assert code == 0, capsys.readouterr().err
    with np.load(out, allow_pickle=False) as saved:
        assert np.abs(saved["x_adv"] - saved["x"]).max() <= 0.1 + 1e-6
        assert saved["x_adv"].min() >= 0 and saved["x_adv"].max() <= 1
