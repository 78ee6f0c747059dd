"""Mixed precision and compilation for attacks and training: ``--precision bf16|fp16``, ``--compile``.

:class:`Autocast` runs a model's forward pass under ``torch.autocast`` and hands back float32
scores, so every attack, loss and check downstream stays in float32 while the convolutions and
matrix products run in bfloat16 (CPU or CUDA) or float16 (CUDA only). Gradients w.r.t. the input
flow through it as usual. ``bf16`` needs no loss scaling in training (float32's exponent range);
``fp16`` training uses ``torch.amp.GradScaler`` (:func:`gibbon.zoo.fit`'s ``precision``).

Whether a precision keeps the numbers is a measurement, not a promise: benchmarks/README.md
("GPU path and mixed precision") compares robust accuracy in float32 and bf16 on the same images.
"""

from __future__ import annotations

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device) -> None:
    """A one-line error for a precision this device cannot run."""
    if precision not in PRECISIONS:
        raise GibbonInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise GibbonInputError("fp16 autocast needs a CUDA device; on CPU use --precision bf16 (or fp32)")


def autocast_context(precision: str, device):
    """``torch.autocast`` for ``precision`` on ``device``'s type, or a no-op context for fp32."""
    if precision == "fp32":
        return torch.autocast(torch.device(device).type, enabled=False)
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


class Autocast(nn.Module):
    """``model`` with its forward pass in ``precision`` and float32 outputs (tensors, tuples, dicts)."""

    def __init__(self, model: nn.Module, precision: str):
        super().__init__()
        if precision not in DTYPES:
            raise GibbonInputError(f"Autocast takes bf16 or fp16, got {precision!r}")
        self.model, self.precision = model, precision

    def forward(self, x):
        device = x.device if isinstance(x, torch.Tensor) else "cpu"
        with autocast_context(self.precision, device):
            out = self.model(x)
        return _to_float32(out)


def _to_float32(out):
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, tuple):
        return tuple(_to_float32(o) for o in out)
    if isinstance(out, list):
        return [_to_float32(o) for o in out]
    if isinstance(out, dict):
        return {k: _to_float32(v) for k, v in out.items()}
    if hasattr(out, "logits") and isinstance(out.logits, torch.Tensor):  # HuggingFace-style output objects
        out.logits = out.logits.float()
    return out


def accelerate(model: nn.Module, *, precision: str = "fp32", compile: bool = False, device="cpu") -> nn.Module:
    """``model`` for attacking: under :class:`Autocast` unless fp32, then ``torch.compile``-d if asked.

    ``torch.compile`` traces the model on its first calls (tens of seconds on a CPU, with a C++
    compiler) and again for each new batch shape; it pays off on long runs of one batch size.
    """
    check_precision(precision, device)
    if not isinstance(model, nn.Module):
        raise GibbonInputError("--precision and --compile apply to a torch model (--model), not a black box")
    out = model if precision == "fp32" else Autocast(model, precision)
    if compile:
        try:
            out = torch.compile(out, dynamic=False)
        except RuntimeError as err:  # e.g. no C++ compiler, an unsupported Python
            raise GibbonInputError(f"torch.compile is not available here ({str(err).splitlines()[0]}); "
                                   "drop --compile") from None
    return out
