import pytest
import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.zoo import ARCHITECTURES, build
from gibbon.zoo.architectures import DATASET_SHAPES

CONV_UPSAMPLED = ["madry-cnn", "wong-net", "carlini-mnist", "tramer-a", "tramer-b", "tramer-c", "lenet5",
                  "papernot-a"]


def test_registry_names():
    assert set(ARCHITECTURES) == {
        "madry-cnn", "wong-net", "carlini-mnist", "tramer-a", "tramer-b", "tramer-c", "tramer-d", "lenet5",
        "fc-500-150", "mlp-200-200", "maxout", "softmax-regression", "logistic-regression", "tanh-cnn",
        "papernot-a",
    }
    assert all(isinstance(d, str) and d for d in ARCHITECTURES.values())


@pytest.mark.parametrize("dataset", ["mnist", "digits", "cifar10", "synthetic"])
@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_gives_logits(name, dataset):
    k = 2 if name == "logistic-regression" else None
    model = build(name, dataset, num_classes=k).eval()
    shape = DATASET_SHAPES[dataset][0]
    with torch.no_grad():
        for batch in (1, 3):
            out = model(torch.rand(batch, *shape))
            assert out.shape == (batch, k or 10)
            assert torch.isfinite(out).all()
    assert not isinstance(list(model.modules())[-1], (nn.Softmax, nn.LogSoftmax))
    assert all(m.training for m in build(name, dataset, num_classes=k).modules())  # fresh: train mode
    assert model.gibbon_spec == {"architecture": name, "input_shape": list(shape),
                                 "num_classes": k or 10, "arch_kwargs": {}}


@pytest.mark.parametrize("name", CONV_UPSAMPLED)
def test_small_inputs_are_upsampled_first(name):
    small, mnist = build(name, "digits"), build(name, "mnist")
    assert isinstance(small[0], nn.Upsample) and small[0].size == (28, 28) and small[0].mode == "bilinear"
    assert not isinstance(mnist[0], nn.Upsample)
    # same geometry after upsampling: identical parameter shapes
    assert [p.shape for p in small.parameters()] == [p.shape for p in mnist.parameters()]


def test_madry_cnn_parameter_count():
    n = sum(p.numel() for p in build("madry-cnn", "mnist").parameters())
    assert abs(n - 3.27e6) / 3.27e6 < 0.01
    assert n == 3_274_634


@pytest.mark.parametrize("name, expected", [("lenet5", 61_706), ("wong-net", 166_406),
                                            ("fc-500-150", 784 * 500 + 500 + 500 * 150 + 150 + 1510),
                                            ("tramer-b", 710_218), ("carlini-mnist", 312_202)])
def test_known_parameter_counts_on_mnist(name, expected):
    assert sum(p.numel() for p in build(name, "mnist").parameters()) == expected


def test_build_from_dataset_object_and_overrides(digits):
    train, _ = digits
    model = build("mlp-200-200", train)
    assert model.gibbon_spec["input_shape"] == [1, 8, 8]
    model = build("softmax-regression", input_shape=(3, 4, 5), num_classes=7)
    assert model(torch.rand(2, 3, 4, 5)).shape == (2, 7)
    assert build("softmax-regression")(torch.rand(2, 1, 28, 28)).shape == (2, 10)  # MNIST by default


def test_logistic_regression_matches_sigmoid_model():
    model = build("logistic-regression", "mnist", num_classes=2)
    x = torch.rand(5, 1, 28, 28)
    logits = model(x)
    z = model[1].linear(x.flatten(1)).squeeze(1)
    assert torch.equal(logits[:, 0], torch.zeros(5))
    assert torch.allclose(logits.softmax(-1)[:, 1], torch.sigmoid(z), atol=1e-6)
    y = torch.tensor([0, 1, 1, 0, 1])
    bce = nn.functional.binary_cross_entropy_with_logits(z, y.float())
    assert torch.allclose(nn.functional.cross_entropy(logits, y), bce, atol=1e-6)


def test_logistic_regression_needs_two_classes():
    with pytest.raises(GibbonInputError, match=r"classes=\[3, 7\]"):
        build("logistic-regression", "mnist")


def test_maxout_dropout_option():
    model = build("maxout", "digits", dropout=0.5)
    assert any(isinstance(m, nn.Dropout) for m in model.modules())
    assert model.gibbon_spec["arch_kwargs"] == {"dropout": 0.5}
    with pytest.raises(GibbonInputError, match="takes no option"):
        build("lenet5", "digits", dropout=0.5)


def test_unknown_names_are_clear_errors():
    with pytest.raises(GibbonInputError, match="madry-cnn.*softmax-regression"):
        build("resnet-9000", "mnist")
    with pytest.raises(GibbonInputError, match="unknown dataset"):
        build("madry-cnn", "imagenet")


def test_build_does_not_consume_rng_beyond_init():
    torch.manual_seed(1)
    a = build("tramer-a", "digits")
    torch.manual_seed(1)
    b = build("tramer-a", "digits")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
