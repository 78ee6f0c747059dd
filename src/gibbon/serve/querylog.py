"""Append-only query logs: one JSONL file per token, every line on disk (fsync) before the answer leaves.

``<log_dir>/queries/<token id>.jsonl`` holds one line per accepted request::

    {"seq": 7, "t": 1717000000.123, "rows": 2, "total": 13, "labels": [3, 8],
     "proj": "<base64 float16 (rows, k)>", "prada": {"statistic": 0.98, "distances": 11}}

``seq`` numbers the token's requests from 1, ``total`` is the token's cumulative query count
after this request, ``proj`` the detector's low-dimensional projection of the inputs (see
:mod:`gibbon.serve.prada`), and ``inputs`` (base64 float32) is present only with ``--log-inputs``.
Raw tokens are never written; the file is named by the token id (a digest prefix).

Durability: each line goes to disk in one ``write`` on an ``O_APPEND`` descriptor, then
``fsync``, before the server answers, so an answered query survives ``kill -9`` or a power cut.
Every line carries ``crc``, the CRC-32 of the line without it, so a damaged line is told from a
good one. On start the log is read back: budgets and detector state are rebuilt from it. A torn
last line (a crash in the middle of a write, never answered) is cut off before appending; a
damaged line anywhere else is skipped, counted and reported, and every line after it is kept
(``total`` is cumulative, so the budget charged after it is never refunded).

``<log_dir>/alerts.jsonl`` holds the detector's alerts, one line each, written the same way.
Files under ``log_dir`` are created ``0600`` and folders ``0700``: the logs hold projections of
the clients' inputs (and the inputs themselves with ``--log-inputs``). One server owns a
``log_dir`` at a time (an exclusive ``flock`` on ``server.lock``): two servers on one folder
would each grant the full budget.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import zlib
from pathlib import Path

from gibbon.core.checks import GibbonInputError

log = logging.getLogger("gibbon.serve")
FILE_MODE, DIR_MODE = 0o600, 0o700


def _fsync_dir(path: Path) -> None:
    """Make a new file's directory entry durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crc(body: bytes) -> str:
    return f"{zlib.crc32(body):08x}"


def encode_line(record: dict) -> bytes:
    """``record`` as one JSON line ending in ``"crc": "<crc32 of everything before it>"}``."""
    body = json.dumps(record, separators=(",", ":"), allow_nan=False)
    if not body.startswith("{") or "crc" in record:
        raise ValueError("a log record is a JSON object without a 'crc' key")
    head = body[:-1] + ("," if len(body) > 2 else "")
    return (head + f'"crc":"{_crc(head.encode())}"' + "}\n").encode()


def decode_line(line: bytes) -> dict | None:
    """The record of one complete line, or None if it is damaged (bad JSON, not an object, wrong
    CRC). Lines written before the CRC was added have none and are taken as they are."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    if "crc" not in record:
        return record
    mark = line.rfind(b'"crc":"')
    if mark < 0 or _crc(line[:mark]) != record.pop("crc"):
        return None
    return record


def read_lines(path: Path) -> tuple[list[dict], int, list[int]]:
    """The good records of ``path``, the byte length up to the end of its last complete line (a
    torn tail is left out), and the 1-based numbers of the damaged complete lines (skipped)."""
    if not path.exists():
        return [], 0, []
    records, good, damaged = [], 0, []
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith(b"\n"):
                break
            good += len(line)
            record = decode_line(line)
            if record is None:
                damaged.append(number)
            else:
                records.append(record)
    return records, good, damaged


def _open_append(path: Path) -> int:
    """An ``O_APPEND`` descriptor on ``path``, created ``0600`` (an older looser file is tightened)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


class JsonlLog:
    """One append-only JSONL file: :meth:`append` returns only once the line is on disk.

    ``damaged`` lists the line numbers skipped on reading (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        self.records, good, self.damaged = read_lines(self.path)
        if self.damaged:
            log.warning("%s: skipped %d damaged line(s) (line %s); the %d good lines are kept", self.path,
                        len(self.damaged), ", ".join(map(str, self.damaged[:10])), len(self.records))
        new = not self.path.exists()
        self.fd = _open_append(self.path)
        if os.fstat(self.fd).st_size != good:  # cut a torn tail left by a crash mid-write (it was never answered)
            os.ftruncate(self.fd, good)
            os.fsync(self.fd)
        if new:
            _fsync_dir(self.path.parent)
        self.lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = encode_line(record)
        with self.lock:
            if self.fd < 0:
                raise ValueError(f"{self.path} is closed")
            written = os.write(self.fd, line)  # one write on O_APPEND: the line lands whole, after the last
            while written < len(line):  # a short write (disk full, signal): finish it before answering
                written += os.write(self.fd, line[written:])
            os.fsync(self.fd)

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


class QueryLogs:
    """The per-token query logs and the alerts log of one deployment under ``log_dir``.

    ``meta`` (the detector's projection settings) is written to ``server.json`` on first use and
    must match on every later start: logged projections are only comparable under one projection.
    """

    def __init__(self, log_dir, meta: dict):
        self.root = Path(log_dir)
        (self.root / "queries").mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.root, DIR_MODE)
        os.chmod(self.root / "queries", DIR_MODE)
        self.lock_fd = _lock(self.root / "server.lock")
        try:
            self._open(meta)
        except BaseException:
            os.close(self.lock_fd)
            raise

    def _open(self, meta: dict) -> None:
        meta_path = self.root / "server.json"
        if meta_path.exists():
            os.chmod(meta_path, FILE_MODE)  # a folder written before files were private
            try:
                old = json.loads(meta_path.read_text())
            except ValueError:
                raise GibbonInputError(f"{meta_path} is not valid JSON; restore it or use a fresh --log-dir") from None
            if old != meta:
                raise GibbonInputError(f"--log-dir {self.root} was written with detector settings {old}, not {meta}; "
                                       "start with the same settings or a fresh --log-dir")
        else:
            tmp = meta_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                os.write(fd, (json.dumps(meta, sort_keys=True) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, meta_path)
            _fsync_dir(self.root)
        self.alerts = JsonlLog(self.root / "alerts.jsonl")
        self.logs: dict[str, JsonlLog] = {}

    def for_token(self, tid: str) -> JsonlLog:
        if tid not in self.logs:
            self.logs[tid] = JsonlLog(self.root / "queries" / f"{tid}.jsonl")
        return self.logs[tid]

    def damaged(self) -> dict:
        """``{file name: [damaged line numbers]}`` for every log read with damaged lines."""
        return {log.path.name: log.damaged for log in [self.alerts, *self.logs.values()] if log.damaged}

    def close(self) -> None:
        for querylog in [*self.logs.values(), self.alerts]:
            querylog.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)  # closing the descriptor releases the flock
            self.lock_fd = -1


def _lock(path: Path) -> int:
    """An exclusive, non-blocking ``flock`` on ``path`` (holding the owner's pid), or a clear error."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise GibbonInputError(f"--log-dir {path.parent} is in use by another gibbon serve (pid {owner}); two "
                               "servers on one log folder would each grant every token its whole budget: stop "
                               "the other one or give this one its own --log-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
