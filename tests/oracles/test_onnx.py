"""ONNX oracles: export of zoo models (dynamic batch), same logits as torch, query counting, input checks."""

from __future__ import annotations

import sys

import pytest
import torch
from _helpers import one_thread  # noqa: F401 - autouse in this module

from gibbon import data, zoo
from gibbon.attacks import square
from gibbon.core.checks import GibbonInputError
from gibbon.oracles import GradientRefusedError, OnnxModel, Oracle, export_onnx


@pytest.fixture(scope="module")
def small_mlp(one_thread):
    """A 64-32-10 MLP trained on the digits train split (full-batch Adam; measured 99% test accuracy)."""
    train = data.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(200):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(train.x), train.y).backward()
            opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()


@pytest.fixture(scope="module")
def lenet(one_thread):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return zoo.build("lenet5", "digits")  # train mode, as built


@pytest.fixture(scope="module")
def lenet_onnx(lenet, tmp_path_factory):
    return export_onnx(lenet, tmp_path_factory.mktemp("onnx") / "lenet5.onnx", (1, 8, 8))


@pytest.fixture(scope="module")
def test_digits():
    return data.load("digits", "test")


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_dynamo_export_gives_torch_logits_at_any_batch_size(batch, lenet, lenet_onnx, test_digits):
    x = test_digits.x[:batch]
    lenet.eval()
    try:
        with torch.no_grad():
            want = lenet(x)
    finally:
        lenet.train()
    got = OnnxModel(lenet_onnx)(x)
    assert got.shape == want.shape and got.dtype == torch.float32
    assert float((got - want).abs().max()) <= 1e-4, float((got - want).abs().max())


def test_the_file_is_self_contained_with_a_dynamic_batch(lenet_onnx):
    import onnx

    assert not any(lenet_onnx.parent.glob("*.data")), "weights must be inside the .onnx file"
    graph = onnx.load(str(lenet_onnx)).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert graph.input[0].name == "x" and graph.output[0].name == "scores"
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 8, 8]
    model = OnnxModel(lenet_onnx)
    assert model.input_shape == (1, 8, 8) and model.num_classes == 10


def test_export_leaves_the_model_as_it_was(lenet, lenet_onnx):
    assert lenet.training and all(m.training for m in lenet.modules())
    assert all(p.requires_grad and p.grad is None for p in lenet.parameters())


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_legacy_exporter_works_too(small_mlp, tmp_path, test_digits):
    path = export_onnx(small_mlp, tmp_path / "mlp.onnx", (1, 8, 8), dynamo=False)
    x = test_digits.x[:50]
    with torch.no_grad():
        want = small_mlp(x)
    assert float((OnnxModel(path)(x) - want).abs().max()) <= 1e-4


def test_oracle_counts_queries_and_refuses_gradients(lenet_onnx, test_digits):
    oracle = Oracle(OnnxModel(lenet_onnx), max_queries=2, n=20)
    oracle(test_digits.x[:20])
    oracle(test_digits.x[:5], idx=torch.arange(5))
    assert oracle.total == 25 and oracle.queries.tolist() == [2] * 5 + [1] * 15
    with pytest.raises(GradientRefusedError):
        oracle(test_digits.x[:2].clone().requires_grad_(True))
    with pytest.raises(GradientRefusedError, match="black-box attack"):
        OnnxModel(lenet_onnx)(test_digits.x[:2].clone().requires_grad_(True))


def test_inputs_are_validated(lenet_onnx):
    model = OnnxModel(lenet_onnx)
    with pytest.raises(GibbonInputError, match=r"takes inputs of shape \(B, 1, 8, 8\), got \(2, 1, 28, 28\)"):
        model(torch.zeros(2, 1, 28, 28))
    with pytest.raises(GibbonInputError, match="takes inputs of shape"):
        model(torch.zeros(2, 64))
    with pytest.raises(GibbonInputError, match="floating-point"):
        model(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))
    assert model(torch.zeros(3, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64
    assert model(torch.zeros(0, 1, 8, 8)).shape == (0, 10)


def test_bad_files_and_arguments_are_refused(tmp_path, lenet):
    with pytest.raises(GibbonInputError, match="no ONNX model"):
        OnnxModel(tmp_path / "none.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf")
    with pytest.raises(GibbonInputError, match="cannot load"):
        OnnxModel(junk)
    with pytest.raises(GibbonInputError, match=r"PATH\.onnx"):
        export_onnx(lenet, tmp_path / "m.pt", (1, 8, 8))
    with pytest.raises(GibbonInputError, match="torch modules"):
        export_onnx(lambda x: x, tmp_path / "m.onnx", (1, 8, 8))


def test_missing_onnxruntime_says_how_to_install(lenet_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'gibbon\[onnx\]'"):
        OnnxModel(lenet_onnx)


def test_square_breaks_an_onnx_oracle(small_mlp, tmp_path, test_digits):
    # Measured: 100% -> 0% on 100 test digits at eps 0.2 with 100 queries.
    path = export_onnx(small_mlp, tmp_path / "mlp.onnx", (1, 8, 8))
    x, y = test_digits.x[:100], test_digits.y[:100]
    oracle = Oracle(OnnxModel(path))
    x_adv = square(oracle, x, y, eps=0.2, max_queries=100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = float((small_mlp(x).argmax(1) == y).float().mean())
        robust = float((small_mlp(x_adv).argmax(1) == y).float().mean())
    assert clean >= 0.9 and robust <= 0.4, f"clean {clean:.2f}, under Square {robust:.2f}"
    assert int(oracle.queries.max()) <= 100
