"""Bearer tokens of a deployment: who may query, how much (budget) and how fast (rate), who is admin.

Tokens come from a file (``--tokens-file``, YAML or JSON) or from ``GIBBON_TOKENS`` (comma-separated,
each with the server's defaults). A token is kept only as its sha256 digest and looked up with
:func:`hmac.compare_digest`; logs, file names and alerts name a token by :func:`token_id` (the first
12 hex digits of that digest) and never by its value.

File format (YAML or JSON; ``sha256`` may replace ``token`` so the file holds no secret)::

    defaults: {budget: 100000, rate: 100.0, burst: 500}
    tokens:
      - {token: "...at least 16 characters...", name: alice, budget: 20000}
      - {sha256: "<64 hex digits>", name: ops, admin: true, budget: null}

``budget`` counts queries (input rows) over the token's life, ``null`` for unlimited; ``rate`` is
in queries (rows) per second and ``burst`` the token bucket's size in rows, so a request of ``B``
rows takes ``B`` tokens from the bucket.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gibbon.core.checks import GibbonInputError

MIN_TOKEN_CHARS = 16
DEFAULTS = {"budget": 100_000, "rate": 100.0, "burst": 500, "admin": False}
_KEYS = {"token", "sha256", "name", "budget", "rate", "burst", "admin"}
_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"


def digest(token: str) -> str:
    """The sha256 hex digest a token is stored and compared by."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_id(token_digest: str) -> str:
    """The public name of a token in logs and alerts: the first 12 hex digits of its digest."""
    return token_digest[:12]


@dataclass(frozen=True)
class TokenSpec:
    """One token's permissions (the secret itself is not kept, only its digest)."""

    digest: str
    name: str
    budget: int | None  # queries over the token's life; None: unlimited
    rate: float  # queries (rows) per second
    burst: int  # token-bucket size, in rows
    admin: bool = False

    @property
    def id(self) -> str:
        return token_id(self.digest)


def _number(entry: dict, key: str, where: str, *, whole: bool, allow_none: bool = False):
    value = entry[key]
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok or (whole and int(value) != value):
        kind = "a whole number > 0" + (" or null" if allow_none else "") if whole else "a number > 0"
        raise GibbonInputError(f"{where}: {key} must be {kind}, got {value!r}")
    return int(value) if whole else float(value)


def parse_entry(entry, defaults: dict, where: str) -> TokenSpec:
    """One ``tokens`` entry (a dict) as a :class:`TokenSpec`, with ``defaults`` for missing fields."""
    if not isinstance(entry, dict):
        raise GibbonInputError(f"{where} must be a mapping with a token (or sha256) and optional limits")
    unknown = set(entry) - _KEYS
    if unknown:
        raise GibbonInputError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    if ("token" in entry) == ("sha256" in entry):
        raise GibbonInputError(f"{where}: give exactly one of token (the secret) or sha256 (its hex digest)")
    if "token" in entry:
        raw = entry["token"]
        if not isinstance(raw, str) or len(raw) < MIN_TOKEN_CHARS or not raw.isprintable() or " " in raw:
            raise GibbonInputError(f"{where}: a token must be a string of at least {MIN_TOKEN_CHARS} printable "
                                   f"characters without spaces; {_HINT}")
        dig = digest(raw)
    else:
        dig = entry["sha256"]
        if not isinstance(dig, str) or len(dig) != 64 or any(c not in "0123456789abcdef" for c in dig.lower()):
            raise GibbonInputError(f"{where}: sha256 must be 64 hex digits (hashlib.sha256(token).hexdigest())")
        dig = dig.lower()
    merged = {**DEFAULTS, **defaults, **entry}
    if not isinstance(merged["admin"], bool):
        raise GibbonInputError(f"{where}: admin must be true or false")
    name = merged.get("name", token_id(dig))
    if not isinstance(name, str) or not name or len(name) > 64 or not name.isprintable():
        raise GibbonInputError(f"{where}: name must be a short printable label")
    return TokenSpec(digest=dig, name=name, budget=_number(merged, "budget", where, whole=True, allow_none=True),
                     rate=_number(merged, "rate", where, whole=False),
                     burst=_number(merged, "burst", where, whole=True), admin=merged["admin"])


def check_unique(specs: list[TokenSpec]) -> list[TokenSpec]:
    if not specs:
        raise GibbonInputError(f"no tokens given; pass --tokens-file or set GIBBON_TOKENS ({_HINT})")
    seen = set()
    for spec in specs:
        if spec.id in seen:
            raise GibbonInputError(f"token {spec.id} ({spec.name}) is listed twice; each token once")
        seen.add(spec.id)
    return specs


def load_tokens_file(path) -> list[TokenSpec]:
    """Tokens from a YAML (``.yaml``/``.yml``) or JSON file; see the module docstring for the format."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise GibbonInputError(f"cannot read tokens file {path}: {e.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            doc = yaml.safe_load(text)
        else:
            doc = json.loads(text)
    except Exception as e:  # noqa: BLE001 - yaml and json raise their own error types
        raise GibbonInputError(f"tokens file {path} is not valid {path.suffix[1:] or 'JSON'}: "
                               f"{str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tokens"), list):
        raise GibbonInputError(f"tokens file {path} must hold a mapping with a 'tokens' list")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - (_KEYS - {"token", "sha256", "name"}):
        raise GibbonInputError(f"{path}: defaults may set only budget, rate, burst, admin")
    return check_unique([parse_entry(e, defaults, f"{path} tokens[{i}]") for i, e in enumerate(doc["tokens"])])


def tokens_from_env(value: str, defaults: dict | None = None) -> list[TokenSpec]:
    """``GIBBON_TOKENS="tokA,tokB"``: each token with the server's default budget, rate and burst."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    return check_unique([parse_entry({"token": p}, defaults or {}, f"GIBBON_TOKENS item {i + 1}")
                         for i, p in enumerate(parts)])


class TokenStore:
    """Looks a presented bearer token up among the configured digests (constant-time comparisons)."""

    def __init__(self, specs: list[TokenSpec]):
        self.specs = check_unique(list(specs))
        self.by_id = {s.id: s for s in self.specs}

    def lookup(self, presented: str | None) -> TokenSpec | None:
        if not presented:
            return None
        dig = digest(presented)
        found = None
        for spec in self.specs:  # compare against every entry, so timing does not tell which one matched
            if hmac.compare_digest(spec.digest, dig):
                found = spec
        return found


class TokenBucket:
    """Rate limit: ``rate`` rows per second, at most ``burst`` saved up (starts full).

    Example:
        >>> bucket = TokenBucket(rate=10.0, burst=5, clock=lambda: 0.0)
        >>> bucket.take(5), bucket.take(1)
        (0.0, 0.1)
    """

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.level, self.stamp = float(burst), clock()
        self.lock = threading.Lock()

    def take(self, cost: int) -> float:
        """Take ``cost`` rows if there are enough: returns 0.0, else the seconds to wait (nothing taken)."""
        with self.lock:
            now = self.clock()
            self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
            self.stamp = now
            if cost <= self.level:
                self.level -= cost
                return 0.0
            return (cost - self.level) / self.rate

    def wait(self, cost: int) -> float:
        """Seconds until ``cost`` rows could be taken (0.0: now); takes nothing."""
        with self.lock:
            level = min(self.burst, self.level + (self.clock() - self.stamp) * self.rate)
            return 0.0 if cost <= level else (cost - level) / self.rate


class FailedAuthLimiter:
    """Online token guessing, throttled per client address: each client may fail ``burst``
    times, then one more failure per ``1 / rate`` seconds. A client with no failures left is
    refused (429) *before* its token is looked up, a valid one included, so a lucky guess made
    while blocked is never confirmed. The cost is that clients behind one address (a NAT) share
    the allowance.

    At most ``max_clients`` addresses are tracked; past that, those with a full allowance
    (nothing to remember) are dropped, then the least recently failing ones.

    Example:
        >>> limiter = FailedAuthLimiter(burst=2, rate=0.5, clock=lambda: 0.0)
        >>> limiter.failed("10.0.0.1"); limiter.failed("10.0.0.1")
        >>> limiter.wait("10.0.0.1"), limiter.wait("10.0.0.2")
        (2.0, 0.0)
    """

    def __init__(self, burst: int, rate: float, max_clients: int = 10_000, clock=time.monotonic):
        if burst < 1 or not rate > 0 or max_clients < 1:
            raise GibbonInputError("the failed-login limit needs burst >= 1, rate > 0 and max_clients >= 1")
        self.burst, self.rate, self.max_clients, self.clock = int(burst), float(rate), int(max_clients), clock
        self.buckets: dict[str, TokenBucket] = {}
        self.lock = threading.Lock()

    def wait(self, client: str) -> float:
        """Seconds before ``client`` may try a token again (0.0: now)."""
        with self.lock:
            bucket = self.buckets.get(client)
        return 0.0 if bucket is None else bucket.wait(1)

    def failed(self, client: str) -> None:
        """Count one failed authentication of ``client``."""
        with self.lock:
            bucket = self.buckets.pop(client, None) or TokenBucket(self.rate, self.burst, self.clock)
            self.buckets[client] = bucket  # re-inserted last: dicts keep the failing order
            bucket.take(1)
            if len(self.buckets) > self.max_clients:
                self._forget()

    def _forget(self) -> None:
        for client in [c for c, b in self.buckets.items() if b.wait(self.burst) == 0.0]:
            del self.buckets[client]
        while len(self.buckets) > self.max_clients:
            del self.buckets[next(iter(self.buckets))]
