"""ONNX models as black-box models: run with onnxruntime (CPU), export torch models with a dynamic batch.

Threat model: black-box only. An ONNX graph run by onnxruntime gives scores and no gradient, so
it is attacked with score-based or decision-based attacks through an
:class:`~gibbon.oracles.Oracle` (query counting, budgets, gradients refused).

:class:`OnnxModel` is a callable ``x (B, C, H, W) -> scores (B, K)`` on tensors; inputs are
checked against the graph's input (rank, fixed dimensions, floating point) and cast to its
element type; scores come back as the graph computes them (logits for a model exported from
gibbon) in ``x``'s dtype and on ``x``'s device.

:func:`export_onnx` writes a torch model with ``torch.onnx.export``. With torch 2.13 the default
is the torch.export-based ("dynamo") exporter, which needs the ``onnx`` and ``onnxscript``
packages; ``dynamo=False`` selects the deprecated TorchScript exporter for models torch.export
cannot trace. Both mark the batch dimension dynamic and write one self-contained file (weights
inside, so models up to protobuf's 2 GB).

Needs the ``onnx`` extra: ``pip install 'gibbon[onnx]'``.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.oracles.base import GradientRefusedError

INSTALL_HINT = "pip install 'gibbon[onnx]'"
_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        raise ImportError(f"{module} is needed for ONNX models but is not installed; {INSTALL_HINT}") from None


class OnnxModel:
    """An ONNX classifier run by onnxruntime on the CPU: ``x (B, ...) -> scores (B, K)``.

    Args:
        path: the ``.onnx`` file.
        threads: onnxruntime intra-op threads (None: its default, all cores).

    Attributes:
        input_shape: one input's shape, ``None`` for a dimension the graph leaves free.
        input_name, output_name: the graph's first input and output.

    Example:
        >>> import tempfile, os
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> path = export_onnx(net, os.path.join(tempfile.mkdtemp(), "net.onnx"), (1, 2, 2))
        >>> OnnxModel(path)(torch.zeros(5, 1, 2, 2)).shape
        torch.Size([5, 3])
    """

    def __init__(self, path, *, threads: int | None = None):
        ort = _require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise GibbonInputError(f"no ONNX model at {path}; write one with gibbon.oracles.export_onnx")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            raise GibbonInputError(f"cannot load {path} as an ONNX model: {str(e).splitlines()[0]}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise GibbonInputError(f"{path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                                   "an ONNX classifier for gibbon takes one batch of inputs")
        self.path, self.input_name, self.output_name = path, inputs[0].name, outputs[0].name
        if inputs[0].type not in _DTYPES:
            raise GibbonInputError(f"{path} takes {inputs[0].type}; gibbon feeds float16/32/64 inputs")
        self.dtype = _DTYPES[inputs[0].type]
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape[1:])
        k = outputs[0].shape[-1] if outputs[0].shape else None
        self.num_classes = k if isinstance(k, int) else None

    def _check(self, x) -> None:
        want = "(B, " + ", ".join("*" if d is None else str(d) for d in self.input_shape) + ")"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise GibbonInputError(f"inputs must be a floating-point tensor {want}, got "
                                   f"{getattr(x, 'dtype', type(x).__name__)}; convert with x.float()")
        if x.ndim != len(self.input_shape) + 1 or any(d is not None and d != s for d, s in zip(self.input_shape, x.shape[1:])):
            raise GibbonInputError(f"{self.path.name} takes inputs of shape {want}, got {tuple(x.shape)}; "
                                   "pick the dataset it was exported for")
        if x.requires_grad:
            raise GradientRefusedError("an ONNX model run by onnxruntime has no input gradients; use a black-box "
                                       "attack (square, one-pixel) and query with x.detach()")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if x.shape[0] == 0 and self.num_classes is not None:
            return x.new_zeros((0, self.num_classes))
        feed = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=self.dtype)
        (out,) = self.session.run([self.output_name], {self.input_name: feed})
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise GibbonInputError(f"{self.path.name} returned shape {out.shape} for {x.shape[0]} inputs; "
                                   "a classifier must return scores (B, K)")
        return torch.from_numpy(np.asarray(out)).to(device=x.device, dtype=x.dtype)

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, input_shape={self.input_shape}, classes={self.num_classes})"


@contextmanager
def _eval_and_quiet(model: nn.Module):
    """Eval mode for the export (each module's own flag back afterwards); the exporter's info logs muted."""
    flags = [(m, m.training) for m in model.modules()]
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    model.eval()
    logger.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping torchvision::nms"
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)  # torch-internal
            yield
    finally:
        logger.setLevel(level)
        for module, flag in flags:
            module.training = flag


def export_onnx(model: nn.Module, path, input_shape, *, dynamo: bool = True, opset_version: int | None = None,
                check: bool = True) -> Path:
    """Write ``model`` (``x -> logits``) to ``path`` as ONNX with a dynamic batch dimension.

    The graph's input is named ``x`` with shape ``(batch, *input_shape)``, its output ``scores``
    with shape ``(batch, K)``. The model is traced in eval mode; its training flags, parameters
    and ``requires_grad`` are unchanged afterwards.

    Args:
        model: a torch module.
        path: where to write (``.onnx``); parent folders are created.
        input_shape: one input's shape, e.g. ``(1, 28, 28)``.
        dynamo: True for torch's torch.export-based exporter (needs ``onnx`` and ``onnxscript``),
            False for the older TorchScript one.
        opset_version: ONNX opset (None: the exporter's default).
        check: run the written file with onnxruntime on 3 random inputs and compare with the torch
            model (max difference <= 1e-4 times the logits' scale); raise if they differ.

    Returns:
        ``path``.
    """
    if not isinstance(model, nn.Module):
        raise GibbonInputError(f"export_onnx exports torch modules, got {type(model).__name__}")
    try:
        input_shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise GibbonInputError(f"input_shape must be one input's shape like (1, 28, 28), got {input_shape!r}") from None
    path = Path(path)
    if path.suffix != ".onnx":
        raise GibbonInputError(f"an ONNX model is written as PATH.onnx, got {path}")
    if dynamo:
        _require("onnx"), _require("onnxscript")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    example = torch.zeros((2, *input_shape), device=device, dtype=dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = {"input_names": ["x"], "output_names": ["scores"], "opset_version": opset_version, "verbose": False}
    with _eval_and_quiet(model):
        try:
            if dynamo:
                torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                                  dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
            else:
                torch.onnx.export(model, (example,), str(path), dynamo=False,
                                  dynamic_axes={"x": {0: "batch"}, "scores": {0: "batch"}}, **names)
        except Exception as e:  # noqa: BLE001 - the exporters raise many types
            hint = "; try export_onnx(..., dynamo=False)" if dynamo else ""
            raise RuntimeError(f"torch.onnx.export failed for {type(model).__name__}: "
                               f"{str(e).strip().splitlines()[0]}{hint}") from e
        if check:
            x = torch.rand((3, *input_shape), generator=torch.Generator().manual_seed(0)).to(device, dtype)
            with torch.no_grad():
                want = model(x).detach().cpu()
            got = OnnxModel(path)(x.cpu()).to(want.dtype)
            scale = float(want.abs().max().clamp_min(1.0))
            if got.shape != want.shape or float((got - want).abs().max()) > 1e-4 * scale:
                raise RuntimeError(f"the ONNX export of {type(model).__name__} disagrees with the torch model "
                                   f"(max difference {float((got - want).abs().max()) if got.shape == want.shape else 'shape'}); "
                                   "try export_onnx(..., dynamo=not dynamo)")
    return path
