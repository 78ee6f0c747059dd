"""A deployment: the model, its tokens and, per token, budget, rate limit, query log and PRADA monitor.

Everything here is plain Python and torch (no web framework), so it is tested in-process; the
FastAPI app in :mod:`gibbon.serve.app` only moves bytes in and out of :meth:`Deployment.predict`.

Before any token is looked up, a client address that failed authentication too often is refused
(429 ``too_many_failed_logins`` with ``Retry-After``; :class:`~gibbon.serve.tokens.FailedAuthLimiter`).
Before the body is read, a token that could not pass any batch is refused: budget spent (403)
or rate bucket empty (429) (:meth:`Deployment.precheck`), so refused floods cost no parsing.
Order of checks for one request of ``B`` rows (each refusal leaves budget and log untouched):
``Idempotency-Key`` (422 reused for another batch, 409 still running; a known key with the
same batch is a replay: answered, never charged), ``B > burst`` 413, budget 403
``budget_exhausted`` (the whole request; no partial answers), rate 429 with ``Retry-After``.
Then the model runs, the log line is written and fsync'd, the budget is
charged, and only then the answer goes out. Per token, requests are logged and fed to the
detector in one order (a lock), so replaying the log at start-up rebuilds the same state.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from gibbon.serve import prada
from gibbon.serve.payload import Rejected, batch_digest, response_body
from gibbon.serve.querylog import JsonlLog, QueryLogs
from gibbon.serve.tokens import FailedAuthLimiter, TokenBucket, TokenSpec, TokenStore

log = logging.getLogger("gibbon.serve")
OUTPUTS = ("label", "probs", "topk")
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_-]{8,64}")
RECENT_KEYS = 4096  # idempotency keys remembered per token (a retry comes seconds after its original)


def _rate_limited(spec: TokenSpec, wait: float) -> Rejected:
    """The 429 for a token over its rate, ``wait`` seconds (rounded up) before it may retry."""
    return Rejected(429, "rate_limited", f"over this token's rate of {spec.rate:g} queries/s; retry after the "
                                         "Retry-After seconds", {"Retry-After": str(max(1, math.ceil(wait)))})


@dataclass(frozen=True)
class Settings:
    """Per-deployment limits and answer style (the ``gibbon serve`` options)."""

    output: str = "probs"
    topk: int = 3
    decimals: int | None = None
    max_batch: int = 256
    max_body_bytes: int = 8 * 1024 * 1024
    log_inputs: bool = False
    prada_delta: float = prada.DELTA
    prada_min_distances: int = prada.MIN_DISTANCES
    prada_dim: int = prada.DIM
    prada_seed: int = prada.SEED
    auth_failures: int = 100  # failed logins a client address may make before it is throttled
    auth_failure_rate: float = 1.0  # ... then one more per second


def _b64(arr: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(arr, dtype=dtype).tobytes()).decode("ascii")


class TokenState:
    """One token's counters, bucket, log and detector (guarded by ``lock``)."""

    def __init__(self, spec: TokenSpec, querylog: JsonlLog, detector: prada.Prada):
        self.spec, self.log, self.detector = spec, querylog, detector
        self.bucket = TokenBucket(spec.rate, spec.burst)
        self.used = self.reserved = self.seq = 0
        self.recent: OrderedDict[str, tuple[str, int]] = OrderedDict()  # idempotency key -> (batch digest, seq)
        self.in_flight: set[str] = set()
        self.lock = threading.Lock()

    def remember(self, key: str, digest: str, seq: int) -> None:
        self.recent[key] = (digest, seq)
        while len(self.recent) > RECENT_KEYS:
            self.recent.popitem(last=False)

    def remaining(self) -> int | None:
        return None if self.spec.budget is None else max(self.spec.budget - self.used, 0)

    def usage(self) -> dict:
        return {"token": self.spec.id, "name": self.spec.name, "queries": self.used, "budget": self.spec.budget,
                "remaining": self.remaining()}


class Deployment:
    """The served model with its token states, rebuilt from ``log_dir`` at construction.

    Args:
        model: ``x -> logits`` (a torch module, served in eval mode under ``torch.no_grad()``).
        card: the model card (``input_shape``, ``bounds``, ``classes`` are used).
        tokens: a :class:`~gibbon.serve.tokens.TokenStore`.
        log_dir: where the query logs live (created if missing).
        settings: :class:`Settings`.
    """

    def __init__(self, model, card: dict, tokens: TokenStore, log_dir, settings: Settings = Settings()):
        if settings.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}")
        self.model, self.card, self.tokens, self.settings = model.eval(), card, tokens, settings
        self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.input_shape = tuple(int(d) for d in card["input_shape"])
        self.bounds = tuple(float(b) for b in card.get("bounds") or (0.0, 1.0))
        self.classes = list(card.get("classes") or range(int(card["num_classes"])))
        features = math.prod(self.input_shape)
        self.matrix = prada.projection(features, settings.prada_dim, settings.prada_seed)
        self.dim = int(self.matrix.shape[1])
        meta = {"projection": "gaussian", "dim": self.dim,
                "seed": settings.prada_seed, "input_shape": list(self.input_shape), "proj_dtype": "float16"}
        self.failed_auth = FailedAuthLimiter(settings.auth_failures, settings.auth_failure_rate)
        self.logs = QueryLogs(log_dir, meta)
        self.alerts = list(self.logs.alerts.records)
        self.logs.alerts.records = []
        self.states = {spec.id: self._replay(spec) for spec in tokens.specs}

    def _detector(self) -> prada.Prada:
        return prada.Prada(self.dim, delta=self.settings.prada_delta, min_distances=self.settings.prada_min_distances)

    def _replay(self, spec: TokenSpec) -> TokenState:
        """A token's state from its log: queries used, request count and the detector fed in log order."""
        state = TokenState(spec, self.logs.for_token(spec.id), self._detector())
        for number, record in enumerate(state.log.records, 1):
            try:
                proj = np.frombuffer(base64.b64decode(record["proj"], validate=True), dtype="<f2")
                proj = proj.reshape(int(record["rows"]), self.dim)
                labels = [int(label) for label in record["labels"]]
                total, seq = int(record["total"]), int(record["seq"])
            except (KeyError, TypeError, ValueError) as err:  # JSON of the wrong shape: skipped like a damaged line
                state.log.damaged.append(f"record {number}")
                log.warning("%s: skipped record %d (%s: %s)", state.log.path, number, type(err).__name__, err)
                continue
            state.detector.observe(torch.from_numpy(proj.copy()), labels)
            # totals are cumulative: a skipped record never refunds what a later one charged
            state.used, state.seq = max(state.used, total), max(state.seq, seq)
            if isinstance(record.get("key"), str) and isinstance(record.get("digest"), str):
                state.remember(record["key"], record["digest"], state.seq)
        state.log.records = []  # replayed; not kept in memory
        state.detector.check()
        state.detector.flagged |= any(a.get("token") == spec.id for a in self.alerts)
        return state

    def authenticate(self, header: str | None, client: str | None = None) -> TokenState:
        """The token state for an ``Authorization`` header sent from address ``client``; 401 if
        missing or unknown, 429 while ``client`` has used up its failed logins."""
        client = client or "unknown"
        wait = self.failed_auth.wait(client)
        if wait > 0:
            raise Rejected(429, "too_many_failed_logins", f"too many failed logins from this address; retry in "
                                                          f"{math.ceil(wait)} s with a valid token",
                           {"Retry-After": str(math.ceil(wait))})
        scheme, _, value = (header or "").partition(" ")
        spec = self.tokens.lookup(value.strip()) if scheme.lower() == "bearer" else None
        if spec is None:
            self.failed_auth.failed(client)
            raise Rejected(401, "unauthorized", "send a valid token as 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": 'Bearer realm="gibbon"'})
        return self.states[spec.id]

    def precheck(self, state: TokenState, key: str | None = None) -> None:
        """Refuse before the body is read what no batch could pass: a spent budget (403; not for a
        request with an ``Idempotency-Key``, which may be a free replay) or an empty rate bucket
        (429). Refusals then cost the server no parsing, so a flood of them stays cheap."""
        spec = state.spec
        if key is None and spec.budget is not None and state.used + state.reserved >= spec.budget:
            raise Rejected(403, "budget_exhausted", f"the token has used its budget of {spec.budget} queries; "
                                                    "do not retry", {"X-Gibbon-Budget-Remaining": "0"})
        wait = state.bucket.wait(1)
        if wait > 0:
            raise _rate_limited(spec, wait)

    def _admit(self, state: TokenState, rows: int, charged: bool = True) -> None:
        """Burst, budget (only for a request that will be ``charged``; a replay was paid for) and rate."""
        spec = state.spec
        if rows > spec.burst:
            raise Rejected(413, "batch_too_large", f"this token's rate limit allows at most {spec.burst} inputs "
                                                   "per request; split the batch")
        if charged and spec.budget is not None and state.used + state.reserved + rows > spec.budget:
            left = max(spec.budget - state.used - state.reserved, 0)
            raise Rejected(403, "budget_exhausted", f"this request needs {rows} queries but the token has {left} "
                                                    f"left of its budget of {spec.budget}; do not retry",
                           {"X-Gibbon-Budget-Remaining": str(left)})
        wait = state.bucket.take(rows)
        if wait > 0:
            raise _rate_limited(spec, wait)

    def predict(self, state: TokenState, x: torch.Tensor, key: str | None = None) -> tuple[dict, dict]:
        """Answer one checked batch for ``state``'s token: ``(body, headers)``; raises :class:`Rejected`.

        ``key`` (the ``Idempotency-Key`` header) makes a retry free: a batch sent again under a
        key already answered for this token is answered again without being charged, logged or
        shown to the detector (the model is deterministic in eval mode, so the answer is the
        same). The same key with another batch is refused (422); a key whose first request is
        still running gets 409, to be retried.
        """
        rows = int(x.shape[0])
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise Rejected(422, "invalid_input", "Idempotency-Key must be 8 to 64 letters, digits, '-' or '_'")
        digest = batch_digest(x) if key is not None else None
        with state.lock:
            seen = state.recent.get(key) if key is not None else None
            if seen is not None and seen[0] != digest:
                raise Rejected(422, "idempotency_key_reused", "this Idempotency-Key was used for another batch; "
                                                              "send a fresh key with each new batch")
            if key is not None and key in state.in_flight:
                raise Rejected(409, "request_in_progress", "a request with this Idempotency-Key is still running; "
                                                           "retry it after the Retry-After seconds",
                               {"Retry-After": "1"})
            self._admit(state, rows, charged=seen is None)
            if seen is None:
                state.reserved += rows
                if key is not None:
                    state.in_flight.add(key)
        if seen is not None:  # already logged and charged: answer again, outside the lock
            return self._respond(self._probabilities(x)), self._headers(state, seen[1], replayed=True)
        try:
            probs = self._probabilities(x)
            labels = probs.argmax(dim=1)
            proj = prada.project(x, self.matrix)
            with state.lock:
                record = {"seq": state.seq + 1, "t": round(time.time(), 3), "rows": rows, "total": state.used + rows,
                          "labels": labels.tolist(), "proj": _b64(proj.numpy(), "<f2")}
                if key is not None:
                    record["key"], record["digest"] = key, digest
                if self.settings.log_inputs:
                    record["inputs"] = _b64(x.numpy(), "<f4")
                state.log.append(record)  # on disk before anything is answered or counted
                state.seq, state.used = record["seq"], record["total"]
                if key is not None:
                    state.remember(key, digest, state.seq)
                state.detector.observe(proj, record["labels"])
                verdict = state.detector.check()
                if verdict.new_alert:
                    self._alert(state, verdict)
        finally:
            with state.lock:
                state.reserved -= rows
                state.in_flight.discard(key)
        return self._respond(probs), self._headers(state, record["seq"], replayed=False)

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(x.to(self.device)).float().softmax(dim=1).cpu()

    def _respond(self, probs: torch.Tensor) -> dict:
        return response_body(probs, self.settings.output, self.settings.topk, self.settings.decimals)

    def _headers(self, state: TokenState, seq: int, *, replayed: bool) -> dict:
        headers = {"X-Gibbon-Queries-Used": str(state.used), "X-Gibbon-Request": str(seq)}
        if replayed:
            headers["X-Gibbon-Replayed"] = "true"
        if state.spec.budget is not None:
            headers["X-Gibbon-Budget-Remaining"] = str(state.remaining())
        return headers

    def _alert(self, state: TokenState, verdict: prada.Verdict) -> None:
        alert = {"t": round(time.time(), 3), "token": state.spec.id, "name": state.spec.name, "detector": "prada",
                 "statistic": round(verdict.statistic, 6), "delta": self.settings.prada_delta,
                 "distances": verdict.distances, "queries": state.used}
        self.logs.alerts.append(alert)
        self.alerts.append(alert)
        log.warning("PRADA alert: token %s (%s) W=%.4f < %.2f after %d distances", state.spec.id, state.spec.name,
                    verdict.statistic, self.settings.prada_delta, verdict.distances)

    def describe(self) -> dict:
        s = self.settings
        return {"input_shape": list(self.input_shape), "bounds": list(self.bounds), "classes": self.classes,
                "num_classes": len(self.classes), "dtype": "float32", "output": s.output,
                "topk": s.topk if s.output == "topk" else None, "round": s.decimals, "max_batch": s.max_batch,
                "max_body_bytes": s.max_body_bytes, "dataset": self.card.get("dataset"),
                "architecture": self.card.get("architecture")}

    def monitor(self) -> dict:
        """What ``GET /v1/admin/alerts`` shows: every alert, and each token's detector state."""
        tokens = []
        for state in self.states.values():
            with state.lock:
                det = state.detector
                tokens.append({**state.usage(), "flagged": det.flagged, "statistic": det.statistic,
                               "distances": len(det.distances)})
        return {"alerts": list(self.alerts), "tokens": tokens, "delta": self.settings.prada_delta,
                "damaged_log_lines": self.logs.damaged()}

    def close(self) -> None:
        self.logs.close()
