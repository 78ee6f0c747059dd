"""The HTTP face of a :class:`~gibbon.serve.state.Deployment`: a FastAPI app (served by uvicorn).

Routes: ``GET /healthz`` (no token), ``GET /v1/model``, ``GET /v1/usage``, ``POST /v1/predict``,
``GET /v1/admin/alerts`` (admin tokens only) and the OpenAPI schema at ``/openapi.json``.
Every error is JSON ``{"error": "<code>", "detail": "<what to do>"}``; an unexpected failure is
logged on the server and answered 500 ``internal_error`` without a traceback. Bodies over
``max_body_bytes`` are refused (413) from their ``Content-Length`` before they are read, or as
soon as a streamed body passes the limit.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from gibbon.serve.payload import Rejected, decode_json, parse_batch
from gibbon.serve.state import Deployment

log = logging.getLogger("gibbon.serve")
_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
BODY_TIMEOUT = 30.0  # seconds for a whole request body once its headers are in
MAX_PARALLEL = 4  # requests reading, parsing and predicting at once: bounds the memory bodies can take

_NUMBER_NEST = {"type": "array", "items": {}, "description": "nested lists of numbers shaped (B, C, H, W)"}
PREDICT_BODY = {"required": True, "content": {"application/json": {"schema": {"oneOf": [
    {"type": "object", "title": "NestedInputs", "required": ["inputs"], "additionalProperties": False,
     "properties": {"inputs": _NUMBER_NEST}},
    {"type": "object", "title": "BinaryInputs", "required": ["data", "shape"], "additionalProperties": False,
     "properties": {"data": {"type": "string", "description": "base64 of little-endian float32, C order"},
                    "shape": {"type": "array", "items": {"type": "integer"}, "description": "[B, C, H, W]"}}},
]}}}}


class ErrorBody(BaseModel):
    error: str
    detail: str


class TopK(BaseModel):
    label: int
    probability: float


class Prediction(BaseModel):
    """``labels`` always (but with ``--output topk``), ``probabilities`` with ``probs``, ``topk`` with ``topk``."""

    labels: list[int] | None = None
    probabilities: list[list[float]] | None = None
    topk: list[list[TopK]] | None = None


def _error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int, timeout: float = BODY_TIMEOUT) -> bytes:
    """The request body, refusing (413) one over ``limit`` bytes without reading more than that,
    and (408) one that has not arrived whole within ``timeout`` seconds (a slow-body client)."""
    try:
        return await asyncio.wait_for(_read_body(request, limit), timeout)
    except asyncio.TimeoutError:
        raise Rejected(408, "request_timeout", f"the body did not arrive within {timeout:g} s; send it at once") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(400, "bad_request", "invalid Content-Length")
        if int(declared) > limit:
            raise Rejected(413, "body_too_large", f"the body has {declared} bytes; this server takes at most {limit}; "
                                                  "split the batch or use the binary form")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "body_too_large", f"the body is over this server's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def answer_body(deployment: Deployment, state, body: bytes, key: str | None = None) -> tuple[dict, dict]:
    """Decode, check and answer one request body (runs in a worker thread: parsing and the model are CPU work)."""
    doc = decode_json(body)
    x = parse_batch(doc, deployment.input_shape, deployment.bounds, deployment.settings.max_batch)
    return deployment.predict(state, x, key)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected):
        return _error(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        # keep the router's headers: a 405 must say which methods the route takes (Allow, RFC 9110 15.5.6)
        return _error(exc.status_code, _CODES.get(exc.status_code, "http_error"), str(exc.detail),
                      getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        return _error(422, "invalid_input", "the request does not match the API; see /openapi.json")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "the server failed to answer; the error is logged on the server")


def create_app(deployment: Deployment, max_parallel: int = MAX_PARALLEL, body_timeout: float = BODY_TIMEOUT) -> FastAPI:
    """The FastAPI app serving ``deployment`` (see the module docstring for the routes).

    Example:
        >>> app = create_app(deployment)  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    app = FastAPI(title="gibbon prediction API", version="1", docs_url=None, redoc_url=None,
                  description="A classifier behind bearer tokens, query budgets, rate limits and a PRADA monitor.")
    app.state.deployment = deployment
    errors = {code: {"model": ErrorBody} for code in (400, 401, 403, 408, 409, 413, 422, 429)}
    settings = deployment.settings
    working = asyncio.Semaphore(max_parallel)
    _errors(app)

    def auth(request: Request):
        return deployment.authenticate(request.headers.get("authorization"),
                                       request.client.host if request.client else None)

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness (no token needed)."""
        return {"status": "ok"}

    @app.get("/v1/model", responses={401: {"model": ErrorBody}})
    async def model_info(request: Request) -> dict:
        """Input shape, bounds, classes, the answer style and the request limits."""
        auth(request)
        return deployment.describe()

    @app.get("/v1/usage", responses={401: {"model": ErrorBody}})
    async def usage(request: Request) -> dict:
        """Queries used and left for the calling token."""
        return auth(request).usage()

    @app.post("/v1/predict", response_model=Prediction, response_model_exclude_none=True,
              openapi_extra={"requestBody": PREDICT_BODY}, responses=errors)
    async def predict(request: Request):
        """Predictions for a batch of inputs; one input row is one query against the token's budget.
        An ``Idempotency-Key`` header makes a retry of the same batch free."""
        state = auth(request)
        key = request.headers.get("idempotency-key")
        deployment.precheck(state, key)  # refusals before the body: a flood of them reads nothing
        async with working:  # at most max_parallel bodies in memory at once; the rest wait unread
            body = await read_body(request, settings.max_body_bytes, body_timeout)
            answer, headers = await run_in_threadpool(answer_body, deployment, state, body, key)
        return JSONResponse(answer, headers=headers)

    @app.get("/v1/admin/alerts", responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}})
    async def alerts(request: Request) -> dict:
        """PRADA alerts and every token's detector state (admin tokens only)."""
        if not auth(request).spec.admin:
            raise Rejected(403, "forbidden", "this route needs an admin token")
        return await run_in_threadpool(deployment.monitor)

    return app
