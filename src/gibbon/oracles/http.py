"""A remote prediction API as a black-box model: ``HttpOracle(url, token)(x) -> scores`` over HTTP.

Threat model: black-box, as in Papernot et al. 2017's attacks on "a remotely hosted ML system":
the adversary sees only what the API answers (probabilities, top-k or labels) and pays for every
query. :class:`HttpOracle` speaks the API of ``gibbon serve`` (:mod:`gibbon.serve`): inputs go
out in the binary form (base64 little-endian float32 with the shape) in batches of at most
``batch_size`` rows; answers come back as tensors on the input's device.

It is a plain callable ``x -> scores [B, K]`` (or labels ``[B]``), so it is wrapped in an
:class:`~gibbon.oracles.Oracle` like any model and every black-box attack of the library runs
against it unchanged. Retries: 429 waits the server's ``Retry-After``; 5xx, timeouts and
connection errors back off exponentially; nothing else is retried. A 403 ``budget_exhausted``
(or a batch the last known remaining budget cannot pay for) raises :class:`ServerBudgetExhausted`,
a :class:`~gibbon.oracles.QueryBudgetExceeded`. Wrapped in an :class:`~gibbon.oracles.Oracle`, the
server's budget becomes the Oracle's shared budget (``queries_left()``), so attacks that check
``oracle.remaining`` / ``oracle.affordable`` stop cleanly before it instead of failing on it.

Needs httpx: ``pip install 'gibbon[serve]'``.
"""

from __future__ import annotations

import time
import uuid

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.oracles.base import GradientRefusedError, QueryBudgetExceeded

OUTPUTS = ("auto", "scores", "label")


class ServerBudgetExhausted(QueryBudgetExceeded):
    """The server's query budget for this token is spent: no retry helps."""


class ServerError(RuntimeError):
    """The server refused a request (other than for budget) or kept failing after the retries."""


def _encode(x: torch.Tensor) -> dict:
    from gibbon.serve.payload import encode_binary

    return encode_binary(x)


class HttpOracle:
    """The model behind a ``gibbon serve`` API, as a callable on tensors.

    Args:
        url: the server's base URL, e.g. ``"http://127.0.0.1:8000"``.
        token: the bearer token (sent as ``Authorization: Bearer``; never printed by ``repr``).
        batch_size: most rows per request (also capped by the server's ``max_batch``).
        retries: attempts after the first one for 409, 429, 5xx and connection errors. Each batch
            carries a fresh ``Idempotency-Key``, reused by its retries: the server charges a
            batch once even when an answer was lost and the batch sent again.
        timeout: seconds per request.
        output: ``"auto"`` (probabilities when the server gives them, else labels), ``"scores"``
            (probabilities ``[B, K]``, an error if the server answers labels only) or ``"label"``
            (labels ``[B]``). A top-k answer becomes probabilities with 0 outside the top k.
        backoff: first back-off in seconds (doubled per retry, at most ``max_backoff``).
        client: an ``httpx.Client`` to send through instead of a new one (tests, proxies, TLS settings).

    Attributes:
        total: rows answered so far (the local query counter); ``requests``: requests answered;
        remaining: the server's last reported remaining budget (None: unknown or unlimited;
        :meth:`queries_left` asks the server when unknown);
        info: the server's ``GET /v1/model`` answer.

    Example:
        >>> remote = HttpOracle("http://127.0.0.1:8000", token)  # doctest: +SKIP
        >>> x_adv = hopskipjump(Oracle(remote), x, y, max_queries=1000)  # doctest: +SKIP
    """

    def __init__(self, url: str, token: str, *, batch_size: int = 256, retries: int = 5, timeout: float = 30.0,
                 output: str = "auto", backoff: float = 0.1, max_backoff: float = 10.0, client=None):
        try:
            import httpx
        except ImportError:
            raise ImportError("HttpOracle needs httpx; pip install 'gibbon[serve]'") from None
        if output not in OUTPUTS:
            raise GibbonInputError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        if batch_size < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise GibbonInputError("HttpOracle needs batch_size >= 1, retries >= 0, timeout > 0 and backoff >= 0")
        self.url, self.output = url.rstrip("/"), output
        self.retries, self.backoff, self.max_backoff = int(retries), float(backoff), float(max_backoff)
        self._httpx = httpx
        self._auth = {"Authorization": f"Bearer {token}"}
        self.client = client or httpx.Client(base_url=self.url, timeout=timeout)
        self.total = self.requests = self.retried = 0
        self.remaining: int | None = None
        self._budget_known = False  # has the server said what is left (None then means unlimited)?
        self.info = self._request("GET", "/v1/model").json()
        self.batch_size = min(int(batch_size), int(self.info.get("max_batch") or batch_size))
        self.num_classes = int(self.info["num_classes"])
        if output == "scores" and self.info.get("output") == "label":
            raise GibbonInputError("this server answers labels only; use output='label' (decision-based attacks)")

    def _request(self, method: str, path: str, json=None, key: str | None = None):
        """One API call with the retry policy; returns the 200 response or raises. ``key`` goes
        out as the ``Idempotency-Key`` of every attempt, so a retry after a lost answer is not
        charged twice."""
        httpx = self._httpx
        headers = {**self._auth, **({"Idempotency-Key": key} if key else {})}
        for attempt in range(self.retries + 1):
            wait = min(self.backoff * 2 ** attempt, self.max_backoff)
            try:
                response = self.client.request(method, path, json=json, headers=headers)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                if attempt == self.retries:
                    raise ServerError(f"{self.url}{path} unreachable after {attempt + 1} attempts: {e}") from None
            else:
                if response.status_code == 200:
                    return response
                body = _error_body(response)
                if response.status_code == 403 and body.get("error") == "budget_exhausted":
                    left = response.headers.get("x-gibbon-budget-remaining")
                    self.remaining = int(left) if left is not None and left.isdigit() else 0
                    self._budget_known = True
                    raise ServerBudgetExhausted(f"the server's query budget for this token is spent after "
                                                f"{self.total} queries here: {body.get('detail', '')}")
                retryable = response.status_code in (409, 429) or response.status_code >= 500
                if not retryable or attempt == self.retries:
                    raise ServerError(f"{method} {path} answered {response.status_code} {body.get('error', '')}: "
                                      f"{body.get('detail', response.text[:200])}")
                if response.status_code in (409, 429):
                    wait = _retry_after(response, wait)
            self.retried += 1
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _decode(self, answer: dict, rows: int) -> torch.Tensor:
        if "probabilities" in answer and self.output != "label":
            return torch.tensor(answer["probabilities"], dtype=torch.float32).reshape(rows, self.num_classes)
        if "topk" in answer:
            scores = torch.zeros(rows, self.num_classes)
            for i, entries in enumerate(answer["topk"]):
                for entry in entries:
                    scores[i, int(entry["label"])] = float(entry["probability"])
            return scores if self.output != "label" else scores.argmax(dim=1)
        if self.output == "scores":
            raise ServerError("the server answered labels only; use output='label'")
        return torch.tensor(answer["labels"], dtype=torch.int64).reshape(rows)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Answers for the rows of ``x`` (probabilities ``[B, K]`` or labels ``[B]``, on ``x``'s device)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise GibbonInputError("HttpOracle takes a floating-point tensor of inputs (B, C, H, W)")
        if x.requires_grad:
            raise GradientRefusedError("a remote API gives no gradients; query with x.detach()")
        if tuple(x.shape[1:]) != tuple(self.info["input_shape"]):
            raise GibbonInputError(f"the server takes inputs shaped (B, {', '.join(map(str, self.info['input_shape']))}),"
                                   f" got {tuple(x.shape)}")
        out = []
        for chunk in x.detach().float().cpu().split(self.batch_size) if len(x) else ():
            if self.remaining is not None and len(chunk) > self.remaining:
                raise ServerBudgetExhausted(f"{len(chunk)} more queries asked but the server reported only "
                                            f"{self.remaining} left for this token")
            response = self._request("POST", "/v1/predict", json=_encode(chunk), key=uuid.uuid4().hex)
            left = response.headers.get("x-gibbon-budget-remaining")
            self.remaining = int(left) if left is not None else None  # no header: a token without a budget
            self._budget_known = True
            out.append(self._decode(response.json(), len(chunk)))
            self.total += len(chunk)
            self.requests += 1
        if not out:
            shape = (0, self.num_classes) if self.output != "label" and self.info.get("output") != "label" else (0,)
            return torch.zeros(shape).to(x.device)
        result = torch.cat(out).to(x.device)
        return result.to(x.dtype) if result.is_floating_point() else result

    def usage(self) -> dict:
        """The server's count for this token: ``{"queries", "budget", "remaining", ...}``."""
        answer = self._request("GET", "/v1/usage").json()
        left = answer.get("remaining")
        self.remaining, self._budget_known = (None if left is None else int(left)), True
        return answer

    def queries_left(self) -> int | None:
        """The token's budget left on the server (None: unlimited), as the last answer reported
        it; asked with ``GET /v1/usage`` (free) when no answer has said yet. An
        :class:`~gibbon.oracles.Oracle` around this one reads it as its shared budget. Other
        clients of the same token spend it too: the server's 403 stays the final word."""
        if not self._budget_known:
            self.usage()
        return self.remaining

    def close(self) -> None:
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"HttpOracle({self.url!r}, batch_size={self.batch_size}, total={self.total})"


def _error_body(response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response, default: float) -> float:
    value = response.headers.get("retry-after", "")
    try:
        return max(float(value), 0.0)
    except ValueError:
        return default
