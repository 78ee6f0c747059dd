"""Model architectures from the adversarial-ML literature, built by name.

Every model maps inputs ``x`` of shape ``(B, C, H, W)`` in ``[0, 1]`` to raw logits ``(B, K)``
(no softmax), for any batch size. The architectures were designed for MNIST (28x28); the
convolutional ones keep that geometry on smaller inputs (``digits`` is 8x8) by putting a
bilinear :class:`torch.nn.Upsample` to 28x28 as their first module. Larger inputs (CIFAR-10's
3x32x32) are used as they are and the flatten sizes are computed from the real input shape.
MLPs flatten any input shape.

Weights are initialised from torch's global RNG: seed it (``torch.manual_seed``) before
:func:`build` for reproducible initial weights.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gibbon.core.checks import GibbonInputError

#: Input shape and number of classes of the datasets :func:`build` accepts by name.
DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "cifar10": ((3, 32, 32), 10),
    "synthetic": ((1, 8, 8), 10),
}

#: Inputs smaller than this (height or width) are upsampled inside the conv models.
MNIST_SIZE = 28


# --------------------------------------------------------------------------- building blocks


class Conv2dSame(nn.Conv2d):
    """``Conv2d`` with TensorFlow ``padding="SAME"`` semantics for any stride.

    Output size is ``ceil(in / stride)``; when the total padding is odd the extra row/column
    goes at the bottom/right, as in TensorFlow (the original models were written in TF).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            out = math.ceil(size / s)
            total = max((out - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class Maxout(nn.Module):
    """Maxout layer (Goodfellow et al. 2013, arXiv:1302.4389): max over ``pieces`` affine maps."""

    def __init__(self, in_features: int, units: int, pieces: int):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return z.view(*z.shape[:-1], self.units, self.pieces).amax(dim=-1)


class BinaryLogits(nn.Module):
    """One linear unit ``z = w.x + b`` exposed as two logits ``[0, z]``.

    ``softmax([0, z])[1] == sigmoid(z)``, so argmax and cross-entropy on these logits are the
    binary logistic-regression model's prediction and loss.
    """

    def __init__(self, in_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        return torch.cat([torch.zeros_like(z), z], dim=-1)


def _prefix(input_shape, upsample: bool) -> list[nn.Module]:
    """The bilinear upsampling layer a conv model starts with when the input is below 28x28."""
    _, h, w = input_shape
    if upsample and (h < MNIST_SIZE or w < MNIST_SIZE):
        size = (max(h, MNIST_SIZE), max(w, MNIST_SIZE))
        return [nn.Upsample(size=size, mode="bilinear", align_corners=False)]
    return []


def _flat_size(layers: list[nn.Module], input_shape) -> int:
    """Number of features after ``layers`` for one input (a dummy forward, no RNG used)."""
    probe = nn.Sequential(*layers)
    probe.eval()  # dropout would otherwise draw from the global RNG
    with torch.no_grad():
        out = probe(torch.zeros(1, *input_shape))
    probe.train()  # the layers are shared with the model, which starts in train mode
    if out.numel() == 0:
        raise GibbonInputError(f"input shape {tuple(input_shape)} is too small for this architecture")
    return int(out.numel())


def _conv_net(input_shape, num_classes, features: list[nn.Module], head: Callable[[int], list[nn.Module]]):
    layers = _prefix(input_shape, upsample=True) + features + [nn.Flatten()]
    return nn.Sequential(*layers, *head(_flat_size(layers, input_shape)))


def _mlp(input_shape, widths: list[int], num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(input_shape)
    for width in widths:
        layers += [nn.Linear(d, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        d = width
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- architectures


def madry_cnn(input_shape, num_classes):
    """Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep Learning Models Resistant
    to Adversarial Attacks", arXiv:1706.06083 -- the MNIST challenge network.

    conv 32 5x5 same, ReLU, maxpool 2, conv 64 5x5 same, ReLU, maxpool 2, fc 1024, ReLU, fc K.
    3,274,634 parameters on MNIST. Inputs below 28x28 are bilinearly upsampled to 28x28 first.
    """
    c = input_shape[0]
    features = [
        nn.Conv2d(c, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
    ]
    return _conv_net(input_shape, num_classes, features,
                     lambda d: [nn.Linear(d, 1024), nn.ReLU(), nn.Linear(1024, num_classes)])


def carlini_mnist(input_shape, num_classes):
    """The MNIST network of Papernot, McDaniel, Wu, Jha & Swami (2016), "Distillation as a
    Defense to Adversarial Perturbations against Deep Neural Networks", arXiv:1511.04508
    (table 1), reused by Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural
    Networks", arXiv:1608.04644 (table 1).

    conv 32 3x3, ReLU, conv 32 3x3, ReLU, maxpool 2, conv 64 3x3, ReLU, conv 64 3x3, ReLU,
    maxpool 2, fc 200, ReLU, dropout 0.5, fc 200, ReLU, fc K (valid convolutions; dropout as in
    Carlini & Wagner's training code). Inputs below 28x28 are bilinearly upsampled first.
    """
    c = input_shape[0]
    features = [
        nn.Conv2d(c, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
    ]
    return _conv_net(input_shape, num_classes, features,
                     lambda d: [nn.Linear(d, 200), nn.ReLU(), nn.Dropout(0.5), nn.Linear(200, 200), nn.ReLU(),
                                nn.Linear(200, num_classes)])


def wong_net(input_shape, num_classes):
    """Wong, Rice & Kolter (2020), "Fast is better than free: Revisiting adversarial training",
    arXiv:2001.03994 -- the MNIST network of the fast-AT (FGSM + random init) experiments.

    conv 16 4x4 stride 2 pad 1, ReLU, conv 32 4x4 stride 2 pad 1, ReLU, flatten, fc 100, ReLU,
    fc K. Inputs below 28x28 are bilinearly upsampled to 28x28 first.
    """
    c = input_shape[0]
    features = [
        nn.Conv2d(c, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
    ]
    return _conv_net(input_shape, num_classes, features,
                     lambda d: [nn.Linear(d, 100), nn.ReLU(), nn.Linear(100, num_classes)])


def tramer_a(input_shape, num_classes):
    """Tramer, Kurakin, Papernot, Goodfellow, Boneh & McDaniel (2018), "Ensemble Adversarial
    Training: Attacks and Defenses", arXiv:1705.07204 -- MNIST model A.

    conv 64 5x5 valid, ReLU, conv 64 5x5 valid, ReLU, dropout .25, flatten, fc 128, ReLU,
    dropout .5, fc K. Inputs below 28x28 are bilinearly upsampled to 28x28 first.
    """
    c = input_shape[0]
    features = [nn.Conv2d(c, 64, 5), nn.ReLU(), nn.Conv2d(64, 64, 5), nn.ReLU(), nn.Dropout(0.25)]
    return _conv_net(input_shape, num_classes, features,
                     lambda d: [nn.Linear(d, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes)])


def tramer_b(input_shape, num_classes):
    """Tramer et al. (2018), arXiv:1705.07204, MNIST model B.

    dropout .2, conv 64 8x8 stride 2 same, ReLU, conv 128 6x6 stride 2 valid, ReLU,
    conv 128 5x5 valid, ReLU, dropout .5, flatten, fc K. "same" is TensorFlow's SAME padding
    (:class:`Conv2dSame`). Inputs below 28x28 are bilinearly upsampled to 28x28 first.
    """
    c = input_shape[0]
    features = [
        nn.Dropout(0.2),
        Conv2dSame(c, 64, 8, stride=2), nn.ReLU(),
        nn.Conv2d(64, 128, 6, stride=2), nn.ReLU(),
        nn.Conv2d(128, 128, 5), nn.ReLU(),
        nn.Dropout(0.5),
    ]
    return _conv_net(input_shape, num_classes, features, lambda d: [nn.Linear(d, num_classes)])


def tramer_c(input_shape, num_classes):
    """Tramer et al. (2018), arXiv:1705.07204, MNIST model C.

    conv 128 3x3 valid, ReLU, conv 64 3x3 valid, ReLU, dropout .25, flatten, fc 128, ReLU,
    dropout .5, fc K. Inputs below 28x28 are bilinearly upsampled to 28x28 first.
    """
    c = input_shape[0]
    features = [nn.Conv2d(c, 128, 3), nn.ReLU(), nn.Conv2d(128, 64, 3), nn.ReLU(), nn.Dropout(0.25)]
    return _conv_net(input_shape, num_classes, features,
                     lambda d: [nn.Linear(d, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, num_classes)])


def tramer_d(input_shape, num_classes):
    """Tramer et al. (2018), arXiv:1705.07204, MNIST model D (fully connected).

    4 x [fc 300, ReLU, dropout .5], fc K, on the flattened input (any shape).
    """
    return _mlp(input_shape, [300] * 4, num_classes, dropout=0.5)


def lenet5(input_shape, num_classes):
    """LeCun, Bottou, Bengio & Haffner (1998), "Gradient-Based Learning Applied to Document
    Recognition", Proc. IEEE 86(11) -- LeNet-5 (no arXiv id; the paper predates arXiv's cs.LG).

    conv 6 5x5 pad 2, ReLU, maxpool 2, conv 16 5x5, ReLU, maxpool 2, fc 120, ReLU, fc 84, ReLU,
    fc K. Modernised as is customary: ReLU instead of scaled tanh, max-pooling instead of the
    trainable sub-sampling layers, full C3 connectivity, and a linear output layer instead of the
    RBF units. Inputs below 28x28 are bilinearly upsampled to 28x28 first.
    """
    c = input_shape[0]
    features = [
        nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
    ]
    return _conv_net(input_shape, num_classes, features, lambda d: [
        nn.Linear(d, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)])


def tanh_cnn(input_shape, num_classes):
    """Papernot, Thakurta, Song, Chien & Erlingsson (2021), "Tempered Sigmoid Activations for Deep
    Learning with Differential Privacy", arXiv:2007.14191 -- the small MNIST CNN that Tramer &
    Boneh (2021, "Differentially Private Learning Needs Better Features (or Much More Data)",
    arXiv:2011.11660) train end to end with DP-SGD.

    conv 16 8x8 stride 2 pad 2, tanh, maxpool 2 stride 1, conv 32 4x4 stride 2, tanh, maxpool 2
    stride 1, fc 32, tanh, fc K (26k parameters). Bounded tanh activations keep the clipped
    gradients informative under DP-SGD's clipping, where ReLU nets lose accuracy; no BatchNorm,
    so Opacus can bound each example's gradient.
    """
    c = input_shape[0]
    features = [
        nn.Conv2d(c, 16, 8, stride=2, padding=2), nn.Tanh(), nn.MaxPool2d(2, stride=1),
        nn.Conv2d(16, 32, 4, stride=2), nn.Tanh(), nn.MaxPool2d(2, stride=1),
    ]
    return _conv_net(input_shape, num_classes, features, lambda d: [
        nn.Linear(d, 32), nn.Tanh(), nn.Linear(32, num_classes)])


def fc_500_150(input_shape, num_classes):
    """Moosavi-Dezfooli, Fawzi & Frossard (2016), "DeepFool: a simple and accurate method to fool
    deep neural networks", arXiv:1511.04599 -- the MNIST fully connected net 784-500-150-10 (ReLU).
    """
    return _mlp(input_shape, [500, 150], num_classes)


def mlp_200_200(input_shape, num_classes):
    """Papernot, McDaniel, Goodfellow, Jha, Celik & Swami (2017), "Practical Black-Box Attacks
    against Machine Learning", arXiv:1602.02697 -- the substitute model: fc 200, ReLU, fc 200,
    ReLU, fc K.
    """
    return _mlp(input_shape, [200, 200], num_classes)


def papernot_a(input_shape, num_classes, kernel_size: int = 3):
    """Papernot, McDaniel, Goodfellow, Jha, Celik & Swami (2017), "Practical Black-Box Attacks
    against Machine Learning", arXiv:1602.02697 -- substitute architecture A (appendix, table 13),
    the one section 4.1 trains against MetaMind's oracle ("a standard for image classification").

    conv 32 + maxpool 2, conv 64 + maxpool 2, fc 200, ReLU, fc 200, ReLU, fc K (ReLU after each
    convolution, valid padding). The table gives the layer widths, not the kernel size:
    ``kernel_size`` (default 3) is this library's guess. Inputs below 28x28 are bilinearly
    upsampled to 28x28 first.
    """
    if kernel_size < 1:
        raise GibbonInputError(f"kernel_size must be a positive integer, got {kernel_size!r}")
    c = input_shape[0]
    features = [
        nn.Conv2d(c, 32, kernel_size), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, kernel_size), nn.ReLU(), nn.MaxPool2d(2),
    ]
    return _conv_net(input_shape, num_classes, features, lambda d: [
        nn.Linear(d, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, num_classes)])


def maxout(input_shape, num_classes, dropout: float = 0.0):
    """Goodfellow, Shlens & Szegedy (2015), "Explaining and Harnessing Adversarial Examples",
    arXiv:1412.6572 -- the maxout network of the FGSM experiments (maxout units: Goodfellow,
    Warde-Farley, Mirza, Courville & Bengio 2013, arXiv:1302.4389).

    2 maxout layers of 240 units x 5 pieces, then a linear layer to K logits. ``dropout`` (the
    papers used dropout) is applied after each maxout layer when > 0; pass it through
    ``build("maxout", ..., dropout=0.5)``.
    """
    d = math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(2):
        layers.append(Maxout(d, 240, 5))
        if dropout:
            layers.append(nn.Dropout(dropout))
        d = 240
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


def softmax_regression(input_shape, num_classes):
    """Multinomial logistic (softmax) regression: one linear layer to K logits."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def logistic_regression(input_shape, num_classes):
    """Binary logistic regression: one linear unit ``z = w.x + b``.

    Returns logits shaped ``(B, 2)`` as ``[0, z]``, so argmax and cross-entropy equal the sigmoid
    model's prediction and loss. Needs a two-class dataset (e.g. ``classes=[3, 7]``).
    """
    if num_classes != 2:
        raise GibbonInputError(
            f"logistic-regression is a binary model but the data has {num_classes} classes; "
            "load a two-class subset, e.g. gibbon.data.load('mnist', 'train', classes=[3, 7]), "
            "or use softmax-regression for multi-class data"
        )
    return nn.Sequential(nn.Flatten(), BinaryLogits(math.prod(input_shape)))


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "madry-cnn": madry_cnn,
    "wong-net": wong_net,
    "carlini-mnist": carlini_mnist,
    "tramer-a": tramer_a,
    "tramer-b": tramer_b,
    "tramer-c": tramer_c,
    "tramer-d": tramer_d,
    "lenet5": lenet5,
    "tanh-cnn": tanh_cnn,
    "fc-500-150": fc_500_150,
    "mlp-200-200": mlp_200_200,
    "papernot-a": papernot_a,
    "maxout": maxout,
    "softmax-regression": softmax_regression,
    "logistic-regression": logistic_regression,
}

#: Architecture name -> one-line description (for ``gibbon zoo``).
ARCHITECTURES: dict[str, str] = {
    "madry-cnn": "Madry et al. 2018 MNIST CNN: 2 conv (32, 64; 5x5) + maxpool, fc 1024 (3.27M params)",
    "wong-net": "Wong, Rice & Kolter 2020 fast-AT MNIST net: 2 conv (16, 32; 4x4 s2), fc 100",
    "carlini-mnist": "Papernot et al. 2016 / Carlini & Wagner 2017 MNIST net: 4 conv (32, 32, 64, 64; 3x3), fc 200-200",
    "tramer-a": "Tramer et al. 2018 model A: 2 conv 64 5x5, fc 128, dropout",
    "tramer-b": "Tramer et al. 2018 model B: dropout, 3 conv (64 8x8 s2, 128 6x6 s2, 128 5x5), fc",
    "tramer-c": "Tramer et al. 2018 model C: conv 128 3x3, conv 64 3x3, fc 128, dropout",
    "tramer-d": "Tramer et al. 2018 model D: MLP 4 x 300 with dropout",
    "lenet5": "LeCun et al. 1998 LeNet-5 (ReLU + max-pool): conv 6, conv 16, fc 120-84",
    "tanh-cnn": "Papernot et al. 2021 / Tramer & Boneh 2021 DP-SGD MNIST CNN: conv 16 8x8 s2, conv 32 4x4 s2, fc 32, tanh",
    "fc-500-150": "DeepFool (Moosavi-Dezfooli et al. 2016) MNIST MLP 784-500-150-10",
    "mlp-200-200": "Papernot et al. 2017 black-box substitute MLP: fc 200-200",
    "papernot-a": "Papernot et al. 2017 black-box substitute A: conv 32, conv 64 (3x3, max-pool), fc 200-200",
    "maxout": "Goodfellow et al. 2015 maxout net: 2 x 240 units x 5 pieces",
    "softmax-regression": "multinomial logistic regression (one linear layer)",
    "logistic-regression": "binary logistic regression w.x+b, logits [0, w.x+b] (2-class data)",
}


def _resolve_shape(dataset, input_shape, num_classes) -> tuple[tuple[int, ...], int]:
    shape, k = None, None
    if isinstance(dataset, str):
        if dataset not in DATASET_SHAPES:
            raise GibbonInputError(
                f"unknown dataset {dataset!r}; known: {', '.join(DATASET_SHAPES)} "
                "(or pass input_shape= and num_classes=)"
            )
        shape, k = DATASET_SHAPES[dataset]
    elif dataset is not None:
        try:
            shape, k = tuple(dataset.input_shape), int(dataset.num_classes)
        except AttributeError:
            raise GibbonInputError(
                f"dataset must be a gibbon Dataset or a dataset name, got {type(dataset).__name__}"
            ) from None
    if input_shape is not None:
        shape = input_shape
    if num_classes is not None:
        k = num_classes
    if shape is None:
        shape = DATASET_SHAPES["mnist"][0]
    if k is None:
        k = DATASET_SHAPES["mnist"][1]
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise GibbonInputError(f"input_shape must be (C, H, W), got {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise GibbonInputError(f"input_shape must be (C, H, W) with positive sizes, got {shape}")
    if int(k) < 2:
        raise GibbonInputError(f"num_classes must be >= 2, got {k}")
    return shape, int(k)


def build(name: str, dataset=None, *, input_shape=None, num_classes=None, **kwargs) -> nn.Module:
    """Build architecture ``name`` for a dataset.

    Args:
        name: one of :data:`ARCHITECTURES`.
        dataset: a :class:`~gibbon.data.dataset.Dataset`, a dataset name (``"mnist"``,
            ``"digits"``, ``"cifar10"``, ``"synthetic"``) or None (MNIST's shape).
        input_shape: ``(C, H, W)``; overrides the dataset's.
        num_classes: number of logits K; overrides the dataset's.
        **kwargs: architecture options (``dropout`` for ``maxout``).

    Returns:
        A freshly initialised module in train mode, mapping ``(B, C, H, W)`` to ``(B, K)`` logits.
        Its build arguments are attached as ``model.gibbon_spec`` (used by :func:`gibbon.zoo.save`).
        Initial weights come from torch's global RNG: seed it first for reproducibility.
    """
    if name not in _BUILDERS:
        raise GibbonInputError(f"unknown architecture {name!r}; choose one of: {', '.join(_BUILDERS)}")
    shape, k = _resolve_shape(dataset, input_shape, num_classes)
    builder = _BUILDERS[name]
    try:
        inspect.signature(builder).bind(shape, k, **kwargs)
    except TypeError:
        raise GibbonInputError(f"architecture {name!r} takes no option(s) {sorted(kwargs)}") from None
    model = builder(shape, k, **kwargs)
    model.gibbon_spec = {
        "architecture": name,
        "input_shape": list(shape),
        "num_classes": k,
        "arch_kwargs": dict(kwargs),
    }
    return model
