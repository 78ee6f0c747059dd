"""Append-only query logs: one JSONL file per token, every line on disk (fsync) before the answer leaves.

``<log_dir>/queries/<token id>.jsonl`` holds one line per accepted request::

    {"seq": 7, "t": 1717000000.123, "rows": 2, "total": 13, "labels": [3, 8],
     "proj": "<base64 float16 (rows, k)>", "prada": {"statistic": 0.98, "distances": 11}}

``seq`` numbers the token's requests from 1, ``total`` is the token's cumulative query count
after this request, ``proj`` the detector's low-dimensional projection of the inputs (see
:mod:`gibbon.serve.prada`), and ``inputs`` (base64 float32) is present only with ``--log-inputs``.
Raw tokens are never written; the file is named by the token id (a digest prefix).

Durability: a line is written, flushed and fsync'd before the server answers, so an answered
query survives ``kill -9`` or a power cut. On start the log is read back: budgets and detector
state are rebuilt from it. A torn last line (a crash in the middle of a write, never answered) is
cut off before appending.

``<log_dir>/alerts.jsonl`` holds the detector's alerts, one line each, written the same way.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from gibbon.core.checks import GibbonInputError


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


def read_lines(path: Path) -> tuple[list[dict], int]:
    """The complete JSON lines of ``path`` and the byte length they span (a torn tail is left out)."""
    if not path.exists():
        return [], 0
    records, good = [], 0
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except ValueError:
                break
            if not isinstance(record, dict):
                break
            records.append(record)
            good += len(line)
    return records, good


class JsonlLog:
    """One append-only JSONL file: :meth:`append` returns only once the line is on disk."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records, good = read_lines(self.path)
        new = not self.path.exists()
        self.fh = open(self.path, "ab")
        if self.fh.tell() != good:  # cut a torn tail left by a crash mid-write (it was never answered)
            self.fh.truncate(good)
            os.fsync(self.fh.fileno())
        if new:
            _fsync_dir(self.path.parent)
        self.lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        with self.lock:
            self.fh.write(line)
            self.fh.flush()
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        with self.lock:
            if not self.fh.closed:
                self.fh.close()


class QueryLogs:
    """The per-token query logs and the alerts log of one deployment under ``log_dir``.

    ``meta`` (the detector's projection settings) is written to ``server.json`` on first use and
    must match on every later start: logged projections are only comparable under one projection.
    """

    def __init__(self, log_dir, meta: dict):
        self.root = Path(log_dir)
        (self.root / "queries").mkdir(parents=True, exist_ok=True)
        meta_path = self.root / "server.json"
        if meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())
            except ValueError:
                raise GibbonInputError(f"{meta_path} is not valid JSON; restore it or use a fresh --log-dir") from None
            if old != meta:
                raise GibbonInputError(f"--log-dir {self.root} was written with detector settings {old}, not {meta}; "
                                       "start with the same settings or a fresh --log-dir")
        else:
            tmp = meta_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(meta, sort_keys=True) + "\n")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, meta_path)
            _fsync_dir(self.root)
        self.alerts = JsonlLog(self.root / "alerts.jsonl")
        self.logs: dict[str, JsonlLog] = {}

    def for_token(self, tid: str) -> JsonlLog:
        if tid not in self.logs:
            self.logs[tid] = JsonlLog(self.root / "queries" / f"{tid}.jsonl")
        return self.logs[tid]

    def close(self) -> None:
        for log in [*self.logs.values(), self.alerts]:
            log.close()
