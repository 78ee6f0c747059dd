"""Request bodies of ``POST /v1/predict`` to a checked float32 batch, and scores to the response body.

Two request forms (exactly one per request, no other keys):

* ``{"inputs": [[[[...]]]]}`` -- nested JSON numbers shaped ``(B, C, H, W)``;
* ``{"data": "<base64>", "shape": [B, C, H, W]}`` -- little-endian float32 bytes, C order.

Checks, in order: the body is a JSON object (400 ``invalid_json``), the form and the per-input
shape match the model card (422), the batch is 1 to ``max_batch`` rows (413 ``batch_too_large``
above), every value is a finite number (no strings or booleans) inside the card's bounds (422).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math

import numpy as np
import torch


class Rejected(Exception):
    """A request the server refuses: HTTP ``status``, a machine-readable ``code`` and a ``detail`` for humans."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def _invalid(detail: str) -> Rejected:
    return Rejected(422, "invalid_input", detail)


def decode_json(body: bytes) -> dict:
    """The request body as a JSON object (NaN and Infinity literals are kept, and refused later)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise Rejected(400, "invalid_json", "the body must be a JSON object; see GET /v1/model for the shape") from None
    if not isinstance(doc, dict):
        raise Rejected(400, "invalid_json", "the body must be a JSON object with 'inputs' or 'data' and 'shape'")
    return doc


def _check_batch(batch: int, max_batch: int) -> None:
    if batch < 1:
        raise _invalid("the batch is empty; send at least one input")
    if batch > max_batch:
        raise Rejected(413, "batch_too_large", f"{batch} inputs in one request; this server takes at most "
                                               f"{max_batch}, split the batch")


def _want(input_shape) -> str:
    return "(B, " + ", ".join(str(d) for d in input_shape) + ")"


def _flatten(value, shape, depth: int, out: list) -> None:
    """Check ``value`` is a list nest of exactly ``shape[depth:]`` and append its numbers to ``out``."""
    if not isinstance(value, list) or len(value) != shape[depth]:
        got = f"length {len(value)}" if isinstance(value, list) else type(value).__name__
        raise _invalid(f"inputs must be nested lists shaped {tuple(shape)}; at depth {depth} expected "
                       f"length {shape[depth]}, got {got}")
    if depth == len(shape) - 1:
        for v in value:
            if type(v) not in (int, float):
                raise _invalid(f"inputs must hold numbers only, got {type(v).__name__}")
        out.extend(value)
        return
    for item in value:
        _flatten(item, shape, depth + 1, out)


def from_nested(inputs, input_shape, max_batch: int) -> np.ndarray:
    if not isinstance(inputs, list):
        raise _invalid(f"inputs must be nested lists shaped {_want(input_shape)}")
    _check_batch(len(inputs), max_batch)
    shape = (len(inputs), *input_shape)
    flat: list = []
    _flatten(inputs, shape, 0, flat)
    try:
        with np.errstate(over="ignore"):
            return np.asarray(flat, dtype=np.float64).astype(np.float32).reshape(shape)
    except OverflowError:  # an integer too large for a float
        raise _invalid("inputs must be finite numbers") from None


def from_binary(data, shape, input_shape, max_batch: int) -> np.ndarray:
    if not isinstance(data, str) or not isinstance(shape, list) or not shape:
        raise _invalid("the binary form is {'data': <base64 float32, little-endian>, 'shape': [B, C, H, W]}")
    if any(type(d) is not int for d in shape) or tuple(shape[1:]) != tuple(input_shape):
        raise _invalid(f"shape must be {_want(input_shape)} with whole numbers, got {shape}")
    _check_batch(shape[0], max_batch)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("data must be standard base64 (RFC 4648, with padding)") from None
    need = 4 * math.prod(shape)
    if len(raw) != need:
        raise _invalid(f"data holds {len(raw)} bytes; shape {shape} needs {need} (float32, 4 bytes each)")
    return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)  # a writable native-order copy


def parse_batch(doc: dict, input_shape, bounds, max_batch: int) -> torch.Tensor:
    """The checked batch ``(B, *input_shape)`` float32 of a decoded request body; raises :class:`Rejected`."""
    keys = set(doc)
    if keys == {"inputs"}:
        arr = from_nested(doc["inputs"], input_shape, max_batch)
    elif keys == {"data", "shape"}:
        arr = from_binary(doc["data"], doc["shape"], input_shape, max_batch)
    else:
        raise _invalid(f"send either {{'inputs': ...}} or {{'data': ..., 'shape': ...}}, got keys {sorted(keys)[:5]}")
    if not np.isfinite(arr).all():
        raise _invalid("inputs must be finite (no NaN or infinity)")
    lo, hi = bounds
    low, high = float(arr.min()), float(arr.max())
    if low < lo or high > hi:
        raise _invalid(f"inputs must lie within the bounds [{lo}, {hi}], got values in [{low:.4g}, {high:.4g}]; "
                       "put any normalization inside the model")
    return torch.from_numpy(np.ascontiguousarray(arr))


def encode_binary(x: torch.Tensor) -> dict:
    """The binary request form of a batch (what :class:`~gibbon.oracles.HttpOracle` sends).

    Example:
        >>> encode_binary(torch.zeros(1, 1, 1, 1))
        {'data': 'AAAAAA==', 'shape': [1, 1, 1, 1]}
    """
    arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype="<f4")
    return {"data": base64.b64encode(arr.tobytes()).decode("ascii"), "shape": list(arr.shape)}


def response_body(probs: torch.Tensor, output: str, topk: int, decimals: int | None) -> dict:
    """The answer for one batch of probabilities ``[B, K]``, as the deployment's ``output`` allows.

    ``label``: ``{"labels"}``; ``probs``: ``{"labels", "probabilities"}``; ``topk``:
    ``{"topk": [[{"label", "probability"}, ...] per row]}`` (``topk`` classes, most likely first).
    Probabilities are rounded to ``decimals`` places when given.

    Example:
        >>> response_body(torch.tensor([[0.25, 0.75]]), "topk", 1, 1)
        {'topk': [[{'label': 1, 'probability': 0.8}]]}
    """
    labels = probs.argmax(dim=1).tolist()
    if output == "label":
        return {"labels": labels}
    p = probs.double()
    if decimals is not None:
        p = torch.round(p, decimals=decimals)
    if output == "probs":
        return {"labels": labels, "probabilities": p.tolist()}
    values, classes = p.topk(min(topk, p.shape[1]), dim=1)
    return {"topk": [[{"label": c, "probability": v} for c, v in zip(cs, vs)]
                     for cs, vs in zip(classes.tolist(), values.tolist())]}


def batch_digest(x: torch.Tensor) -> str:
    """What identifies a batch of inputs: sha256 of its little-endian float32 bytes and its shape
    (32 hex digits). The server matches an idempotent retry by it; a thief's answer store, its queries."""
    data = np.ascontiguousarray(x.detach().cpu().numpy(), dtype="<f4")
    return hashlib.sha256(repr(data.shape).encode() + data.tobytes()).hexdigest()[:32]
