"""Black boxes named on a command line: ``sklearn:PATH.skops``, ``onnx:PATH.onnx``, a ``gibbon
serve`` URL, or a saved gibbon model, each as a query-counting, gradient-refusing
:class:`~gibbon.oracles.Oracle` (or the model itself). The commands of every sub-app use these,
so none of them imports :mod:`gibbon.cli`.
"""

from __future__ import annotations

import os
from pathlib import Path

from gibbon.core.checks import GibbonInputError


def http_oracle(url: str, token: str | None, *, output: str = "scores", retries: int = 2):
    """The served model at ``url``; a wrong token or a dead server is one line, not a retry storm
    (401/403 are never retried; connection errors get HttpOracle's few backed-off retries).
    ``token`` defaults to ``$GIBBON_TOKEN``."""
    from gibbon.oracles.http import HttpOracle, ServerError

    token = token or os.environ.get("GIBBON_TOKEN")
    if not token:
        raise GibbonInputError("an http:// oracle needs its token: set GIBBON_TOKEN (or pass --token where the command "
                               "has it)")
    try:
        return HttpOracle(url, token, output=output, retries=retries)
    except ServerError as err:
        raise GibbonInputError(f"cannot use the server at {url}: {err}") from None


def load_oracle(spec: str, token: str | None = None, *, output: str = "scores"):
    """``sklearn:PATH.skops``, ``onnx:PATH.onnx`` or a ``gibbon serve`` URL (``http://HOST:PORT``,
    with ``token``) as a query-counting, gradient-refusing Oracle."""
    from gibbon.oracles.base import Oracle

    if spec.startswith(("http://", "https://")):
        return Oracle(http_oracle(spec, token, output=output))
    kind, _, path = spec.partition(":")
    if kind not in ("sklearn", "onnx") or not path:
        raise GibbonInputError(f"--oracle takes sklearn:PATH.skops, onnx:PATH.onnx or http://HOST:PORT, got {spec!r}")
    if not Path(path).exists():
        raise GibbonInputError(f"--oracle file {path} does not exist")
    if kind == "sklearn":
        from gibbon.oracles.sklearn import load_sklearn

        return Oracle(load_sklearn(path))
    from gibbon.oracles.onnx import OnnxModel

    return Oracle(OnnxModel(path))


def load_black_box(spec: str, trust_code: bool = False, token: str | None = None, *, output: str = "scores"):
    """A zoo ``PATH.safetensors`` (a torch model, eval mode) or anything :func:`load_oracle` takes."""
    from gibbon import zoo

    if spec.startswith(("http://", "https://")):
        return load_oracle(spec, token, output=output)
    if ":" not in spec or Path(spec).exists():
        return zoo.load(spec, trust_code=trust_code).eval()
    return load_oracle(spec)
