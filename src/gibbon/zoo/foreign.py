"""Models from outside gibbon as white-box torch modules: ONNX files (through onnx2torch),
torchvision and timm architectures by name, and input normalisation kept inside the model.

Threat model: white-box. Each loader returns a plain ``nn.Module`` (``x -> logits``, eval mode)
whose input gradients are real, so every gradient attack in :mod:`gibbon.attacks` applies. The
black-box view of an ONNX file (onnxruntime, no gradients) is :class:`gibbon.oracles.onnx.OnnxModel`.

* :func:`load_onnx_torch` converts an ONNX graph to torch with onnx2torch and, by default, checks
  the conversion: onnxruntime and the converted module score the same random inputs in the
  input box, and any disagreement beyond ``1e-4`` times the logits' scale is an error.
* :func:`load_torchvision` / :func:`load_timm` build an architecture by name, randomly
  initialised (seeded, the caller's RNG untouched) or from a local ``.safetensors`` state dict.
  Nothing is downloaded unless the caller names pretrained weights, and then the download is
  torchvision's or timm's own.
* :func:`parse_normalization` / :func:`normalize` wrap any model in
  :class:`gibbon.zoo.io.Normalized`, so attacks work in ``[0, 1]`` pixel space while the network
  sees ``(x - mean) / std``.
* :func:`load_foreign` reads the command line's specs: ``onnx:PATH.onnx``,
  ``torchvision:NAME[:key=value,...]``, ``timm:NAME[:key=value,...]``.

Needs the ``onnx`` extra for ONNX files and the ``vision`` extra for torchvision/timm:
``pip install 'gibbon[onnx,vision]'``.

A note on torchvision's PyPI wheel: torchvision 0.28.0 from PyPI is built against CUDA torch, so
with the CPU torch 2.13.0 its C extension does not load, and its import then fails on an
unguarded ``register_fake("torchvision::nms")`` (``operator torchvision::nms does not exist``).
onnx2torch and timm import torchvision, so they fail too. :func:`import_torchvision` works around
exactly that case: it declares the schemas of ``torchvision::nms`` and ``torchvision::qnms``
(no kernels) and imports again. The models need none of torchvision's C++ ops; calling
``torchvision.ops.nms`` still raises torchvision's own "Couldn't load custom C++ ops" error.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.zoo.io import Normalized, _load_weights

ONNX_HINT = "pip install 'gibbon[onnx]'"
VISION_HINT = "pip install 'gibbon[vision]'"
PREFIXES = ("onnx", "torchvision", "timm")
# Named normalisations for --normalize (per-channel mean and std of the training data)
PRESETS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_ONNX_FLOATS = {"tensor(float)": torch.float32, "tensor(double)": torch.float64}
_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")
_KEEP_ALIVE: list = []  # the torch.library.Library that holds the workaround's schemas must outlive the import


# ----------------------------------------------------------------------------- imports

def import_torchvision():
    """``import torchvision``, also where its C extension cannot load (a CUDA wheel beside CPU torch).

    Only the failure ``operator torchvision::nms does not exist`` is worked around (see the module
    docstring); any other import error becomes a one-line install hint.
    """
    try:
        import torchvision

        return torchvision
    except ImportError:
        raise GibbonInputError(f"torchvision is not installed; {VISION_HINT}") from None
    except RuntimeError as err:
        if "torchvision::nms does not exist" not in str(err):
            raise GibbonInputError(f"torchvision does not import ({str(err).splitlines()[0]}); "
                                   "install the torchvision release that matches your torch") from None
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package, so the second import starts clean
    library = torch.library.Library("torchvision", "DEF")
    library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP_ALIVE.append(library)
    import torchvision

    return torchvision


def _import_onnx2torch():
    import_torchvision()  # onnx2torch's nms and roi_align converters import it
    try:
        import onnx2torch

        return onnx2torch
    except ImportError:
        raise GibbonInputError(f"onnx2torch is needed to attack ONNX models with gradients; {ONNX_HINT}") from None


def _import_onnxruntime():
    try:
        import onnxruntime

        return onnxruntime
    except ImportError:
        raise GibbonInputError(f"onnxruntime is needed to check an ONNX conversion; {ONNX_HINT}") from None


def _import_timm():
    import_torchvision()  # timm's layers import torchvision.ops.misc
    try:
        import timm

        return timm
    except ImportError:
        raise GibbonInputError(f"timm is not installed; {VISION_HINT}") from None


# ----------------------------------------------------------------------------- ONNX

def _onnx_input(session, path: Path, input_shape) -> tuple[tuple[int, ...], torch.dtype]:
    """One input's shape (from the graph, or ``input_shape`` where the graph leaves a dimension free)."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise GibbonInputError(f"{path} has {len(inputs)} inputs; a classifier for gibbon takes one batch of inputs")
    if inputs[0].type not in _ONNX_FLOATS:
        raise GibbonInputError(f"{path} takes {inputs[0].type}; gibbon feeds float32/64 inputs")
    graph_shape = list(inputs[0].shape[1:])  # dimension 0 is the batch, fixed or dynamic
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)
        fits = len(input_shape) == len(graph_shape) and all(
            not isinstance(g, int) or g == d for g, d in zip(graph_shape, input_shape))
        if not fits:
            raise GibbonInputError(f"input_shape {input_shape} does not fit {path.name}'s input {graph_shape}")
        return input_shape, _ONNX_FLOATS[inputs[0].type]
    if not all(isinstance(d, int) and d > 0 for d in graph_shape):
        raise GibbonInputError(f"{path.name} leaves input dimensions free ({graph_shape}); pass "
                               "input_shape=(C, H, W) to load_onnx_torch")
    return tuple(graph_shape), _ONNX_FLOATS[inputs[0].type]


def _first_tensor(output) -> torch.Tensor:
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise GibbonInputError(f"the converted ONNX model returned {type(output).__name__}; it must return logits")
    return output


def check_agreement(module: nn.Module, session, input_shape, *, dtype=torch.float32, bounds=(0.0, 1.0),
                    n: int = 4, tolerance: float = 1e-4, seed: int = 0, name: str = "the ONNX model") -> float:
    """Score ``n`` uniform random inputs in ``bounds`` with onnxruntime's ``session`` and with
    ``module``; return the largest difference, or raise if it exceeds ``tolerance`` times the
    logits' scale (``max(1, max |logit|)``)."""
    low, high = float(bounds[0]), float(bounds[1])
    generator = torch.Generator().manual_seed(seed)
    x = (low + (high - low) * torch.rand((n, *input_shape), generator=generator)).to(dtype)
    feed = {session.get_inputs()[0].name: x.numpy()}
    want = torch.from_numpy(np.asarray(session.run([session.get_outputs()[0].name], feed)[0]))
    with torch.no_grad():
        got = _first_tensor(module(x)).to(want.dtype)
    if got.shape != want.shape:
        raise GibbonInputError(f"the torch conversion of {name} returns shape {tuple(got.shape)} where onnxruntime "
                               f"returns {tuple(want.shape)}; the conversion is wrong, attack it as a black box "
                               "(--oracle onnx:PATH)")
    diff = float((got - want).abs().max())
    scale = max(1.0, float(want.abs().max()))
    if not math.isfinite(diff) or diff > tolerance * scale:
        raise GibbonInputError(f"the torch conversion of {name} disagrees with onnxruntime (max logit difference "
                               f"{diff:.3g} > {tolerance:g} x {scale:.3g}); gradients of it would attack a different "
                               "model: attack it as a black box (--oracle onnx:PATH)")
    return diff


def _convert(path: Path) -> nn.Module:
    onnx2torch = _import_onnx2torch()
    try:
        return onnx2torch.convert(str(path))
    except Exception as e:  # noqa: BLE001 - onnx2torch raises many types, e.g. for unsupported operators
        raise GibbonInputError(f"onnx2torch cannot convert {path.name}: {str(e).strip().splitlines()[0]}; attack "
                               "it as a black box (--oracle onnx:PATH)") from None


def load_onnx_torch(path, *, check: bool = True, input_shape=None, bounds=(0.0, 1.0), tolerance: float = 1e-4,
                    n_check: int = 4) -> nn.Module:
    """The ONNX classifier at ``path`` as a torch module (onnx2torch), in eval mode, for white-box attacks.

    Args:
        path: the ``.onnx`` file (batch dimension fixed or dynamic).
        check: compare onnxruntime and the converted module on ``n_check`` random inputs in
            ``bounds`` (see :func:`check_agreement`) and raise :class:`GibbonInputError` if they disagree.
        input_shape: one input's shape, needed only when the graph leaves C/H/W free.
        bounds: the model's input box, where the check's inputs are drawn.
        tolerance: allowed max logit difference, relative to ``max(1, max |logit|)``.

    Returns:
        the module, with ``gibbon_card`` giving ``source``, ``input_shape``, ``num_classes`` and the
        check's ``max_difference`` (None without the check).
    """
    path = Path(path)
    if not path.is_file():
        raise GibbonInputError(f"no ONNX model at {path}; write one with gibbon.oracles.export_onnx")
    ort = _import_onnxruntime()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for bad files
        raise GibbonInputError(f"cannot load {path} as an ONNX model: {str(e).splitlines()[0]}") from None
    shape, dtype = _onnx_input(session, path, input_shape)
    module = _convert(path).to(dtype).eval()
    diff = check_agreement(module, session, shape, dtype=dtype, bounds=bounds, n=n_check, tolerance=tolerance,
                           name=path.name) if check else None
    k = session.get_outputs()[0].shape[-1] if session.get_outputs()[0].shape else None
    module.gibbon_card = {"architecture": None, "source": f"onnx:{path}", "input_shape": list(shape),
                          "num_classes": k if isinstance(k, int) else None, "bounds": [float(b) for b in bounds],
                          "max_difference": diff}
    return module


# ----------------------------------------------------------------------------- torchvision and timm

def _weights_file(weights) -> Path | None:
    """A local ``.safetensors`` path, or None when ``weights`` names something else (or nothing)."""
    if weights is None:
        return None
    path = Path(weights)
    if str(weights).endswith(".safetensors") or path.exists():
        if not path.is_file():
            raise GibbonInputError(f"no weights file at {path}")
        return path
    return None


def _seeded(build, seed: int | None):
    """``build()`` with the global RNG seeded for it and restored afterwards (reproducible random init)."""
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _unknown(kind: str, name: str, known) -> GibbonInputError:
    close = difflib.get_close_matches(name, list(known), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return GibbonInputError(f"{kind} has no model {name!r}{hint}; list them with "
                            + ("torchvision.models.list_models()" if kind == "torchvision" else "timm.list_models()"))


def _finish(model: nn.Module, wpath: Path | None, source: str, num_classes, what: str) -> nn.Module:
    if wpath is not None:
        _load_weights(model, wpath, what)
    model.eval()
    model.gibbon_card = {"architecture": None, "source": source, "num_classes": num_classes,
                         "weights": None if wpath is None else str(wpath)}
    return model


def load_torchvision(name: str, num_classes: int | None = None, weights=None, *, seed: int | None = 0,
                     **kwargs) -> nn.Module:
    """A torchvision classifier by name (``torchvision.models.get_model``), in eval mode.

    Args:
        name: e.g. ``"resnet18"`` (``torchvision.models.list_models()``).
        num_classes: output classes (None: the architecture's default, 1000).
        weights: None for a random init (seeded with ``seed``); ``PATH.safetensors`` for a local
            state dict, loaded strictly; any other string (``"DEFAULT"``, ``"IMAGENET1K_V1"``) is
            passed to torchvision, which downloads those weights itself.
        kwargs: more architecture options for ``get_model``.
    """
    torchvision = import_torchvision()
    if not isinstance(name, str) or name not in torchvision.models.list_models():
        raise _unknown("torchvision", str(name), torchvision.models.list_models())
    wpath = _weights_file(weights)
    options = dict(kwargs, **({} if num_classes is None else {"num_classes": int(num_classes)}))
    named = None if wpath is not None else weights  # a torchvision weights name: its own download

    def build():
        try:
            return torchvision.models.get_model(name, weights=named, **options)
        except (TypeError, ValueError, KeyError) as e:
            raise GibbonInputError(f"torchvision cannot build {name} with weights={named!r} and {options}: "
                                   f"{str(e).splitlines()[0]}") from None

    model = _seeded(build, seed if named is None else None)
    return _finish(model, wpath, f"torchvision:{name}", num_classes, f"torchvision's {name}")


def load_timm(name: str, num_classes: int | None = None, weights=None, *, seed: int | None = 0,
              **kwargs) -> nn.Module:
    """A timm model by name (``timm.create_model``), in eval mode.

    Args:
        name: e.g. ``"resnet10t"`` (``timm.list_models()``).
        num_classes: output classes (None: the model's default).
        weights: None for a random init (seeded with ``seed``); ``PATH.safetensors`` for a local
            state dict, loaded strictly; ``"pretrained"`` asks timm to fetch its pretrained weights
            (timm's own download from the Hugging Face Hub).
        kwargs: more options for ``create_model`` (e.g. ``in_chans=1``).
    """
    timm = _import_timm()
    if not isinstance(name, str) or not timm.is_model(name):
        raise _unknown("timm", str(name), timm.list_models())
    wpath = _weights_file(weights)
    if weights is not None and wpath is None and weights != "pretrained":
        raise GibbonInputError(f"timm weights are None, PATH.safetensors or 'pretrained', got {weights!r}")
    pretrained = weights == "pretrained"
    options = dict(kwargs, **({} if num_classes is None else {"num_classes": int(num_classes)}))

    def build():
        try:
            return timm.create_model(name, pretrained=pretrained, **options)
        except (TypeError, ValueError, KeyError) as e:
            raise GibbonInputError(f"timm cannot build {name} with {options}: {str(e).splitlines()[0]}") from None

    model = _seeded(build, None if pretrained else seed)
    return _finish(model, wpath, f"timm:{name}", num_classes, f"timm's {name}")


# ----------------------------------------------------------------------------- normalisation

def parse_normalization(text: str) -> tuple[list[float], list[float]]:
    """``"MEAN:STD"`` with comma lists per channel (``"0.485,0.456,0.406:0.229,0.224,0.225"``),
    or a preset name (``imagenet``, ``cifar10``) -> ``(mean, std)``."""
    if not isinstance(text, str):
        raise GibbonInputError(f"a normalisation is MEAN:STD or a preset name, got {text!r}")
    if text.strip().lower() in PRESETS:
        mean, std = PRESETS[text.strip().lower()]
        return list(mean), list(std)
    usage = ("--normalize takes MEAN:STD with comma lists per channel (e.g. 0.485,0.456,0.406:0.229,0.224,0.225) "
             f"or one of {', '.join(PRESETS)}")
    parts = text.split(":")
    if len(parts) != 2:
        raise GibbonInputError(f"{usage}; got {text!r}")
    try:
        mean, std = ([float(v) for v in part.split(",")] for part in parts)
    except ValueError:
        raise GibbonInputError(f"{usage}; got {text!r} (not numbers)") from None
    if len(mean) != len(std):
        raise GibbonInputError(f"{usage}; got {len(mean)} means and {len(std)} stds")
    if not all(math.isfinite(v) for v in mean + std) or not all(s > 0 for s in std):
        raise GibbonInputError(f"{usage}; means must be finite and stds > 0, got {text!r}")
    return mean, std


def normalize(model: nn.Module, normalization) -> Normalized:
    """``model`` behind ``(x - mean) / std``: a :class:`~gibbon.zoo.io.Normalized` in the model's mode.
    ``normalization`` is a :func:`parse_normalization` string or a ``(mean, std)`` pair."""
    mean, std = parse_normalization(normalization) if isinstance(normalization, str) else normalization
    first = next(model.parameters(), None)
    wrapped = Normalized(model, mean, std).train(model.training)
    if first is not None:
        wrapped = wrapped.to(first.device)
    card = dict(getattr(model, "gibbon_card", None) or {})
    wrapped.gibbon_card = {**card, "normalization": {"mean": list(mean), "std": list(std)}}
    return wrapped


# ----------------------------------------------------------------------------- command-line specs

def is_foreign_spec(spec) -> bool:
    """Whether ``spec`` is ``onnx:...``, ``torchvision:...`` or ``timm:...`` (not a module path)."""
    return isinstance(spec, str) and spec.partition(":")[0] in PREFIXES and ":" in spec


def _parse_value(value: str):
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def _parse_options(text: str, spec: str) -> dict:
    options = {}
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip().isidentifier():
            raise GibbonInputError(f"model options are key=value,... (e.g. torchvision:resnet18:num_classes=10), "
                                   f"got {item!r} in {spec!r}")
        options[key.strip()] = _parse_value(value.strip())
    return options


def load_foreign(spec: str, weights=None) -> nn.Module:
    """``onnx:PATH.onnx``, ``torchvision:NAME[:key=value,...]`` or ``timm:NAME[:key=value,...]``
    (``num_classes=N`` and the architecture's own options), with ``weights`` a local
    ``.safetensors`` state dict for torchvision/timm (random init without it)."""
    kind, _, rest = spec.partition(":")
    if kind == "onnx":
        if weights is not None:
            raise GibbonInputError("an onnx: model carries its weights; drop --weights")
        if not rest.endswith(".onnx"):
            raise GibbonInputError(f"an ONNX model is given as onnx:PATH.onnx, got {spec!r}")
        return load_onnx_torch(rest)
    name, _, option_text = rest.partition(":")
    if not _NAME.match(name):
        raise GibbonInputError(f"a {kind} model is given as {kind}:NAME[:key=value,...], got {spec!r}")
    if weights is not None and not str(weights).endswith(".safetensors"):
        raise GibbonInputError(f"--weights for a {kind} model is a local PATH.safetensors state dict, got {weights}")
    options = _parse_options(option_text, spec)
    loader = load_torchvision if kind == "torchvision" else load_timm
    return loader(name, weights=weights, **options)
