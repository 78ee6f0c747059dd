"""Checksummed, atomic file download over HTTP(S) with mirror fallback (standard library only)."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

_CHUNK = 1 << 16


class DownloadError(OSError):
    """No mirror delivered a file with the expected size and checksum; nothing was written."""


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file.

    Args:
        path: file to hash.
        algorithm: any :func:`hashlib.new` name, e.g. ``"sha256"`` or ``"md5"``.

    Returns:
        Lower-case hex digest.
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress_bar(enabled: bool, total: int | None, label: str):
    """A ``(advance, close)`` pair; a rich progress bar when enabled and rich is installed."""
    if enabled:
        try:
            from rich.progress import Progress
        except ImportError:  # pragma: no cover - rich is a dependency
            enabled = False
    if not enabled:
        return (lambda n: None), (lambda: None)
    bar = Progress(transient=True)
    bar.start()
    task = bar.add_task(label, total=total)
    return (lambda n: bar.advance(task, n)), bar.stop


def _fetch(url: str, tmp, algorithm: str, timeout: float, progress: bool) -> tuple[int, str]:
    """Stream ``url`` into the open file ``tmp``; returns ``(bytes written, hex digest)``."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"only http(s) URLs are downloaded, got {url!r}")
    h = hashlib.new(algorithm)
    written = 0
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        advance, close = _progress_bar(progress, expected, os.path.basename(urllib.parse.urlsplit(url).path))
        try:
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                tmp.write(chunk)
                h.update(chunk)
                written += len(chunk)
                advance(len(chunk))
        finally:
            close()
    if expected is not None and written != expected:
        raise ValueError(f"truncated: got {written} of {expected} bytes")
    return written, h.hexdigest()


def download(
    urls: str | Sequence[str],
    dest: str | os.PathLike,
    checksum: str,
    algorithm: str = "sha256",
    *,
    size: int | None = None,
    timeout: float = 60.0,
    progress: bool = False,
) -> Path:
    """Download a file, verify it, and move it into place atomically.

    Each URL is a mirror, tried in order until one delivers the right file. The body is
    written to a temporary file next to ``dest``, its size and checksum are verified, and
    only then is it renamed to ``dest``; on any failure the temporary file is removed, so
    ``dest`` either holds a verified file or does not exist. If ``dest`` already exists with
    the right checksum nothing is downloaded.

    Args:
        urls: one URL or a list of mirror URLs for the same file (http/https only).
        dest: destination path; its parent directory is created if needed.
        checksum: expected hex digest of the file.
        algorithm: hash name for :func:`hashlib.new` (``"sha256"``, ``"md5"``, ...).
        size: expected size in bytes, checked when given.
        timeout: socket timeout in seconds per request.
        progress: show a rich progress bar.

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DownloadError: no mirror delivered a file with the expected size and checksum; the
            message lists what went wrong with each mirror.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    dest = Path(dest)
    checksum = checksum.lower()
    if dest.is_file() and file_digest(dest, algorithm) == checksum:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as tmp:
                written, digest = _fetch(url, tmp, algorithm, timeout, progress)
            if size is not None and written != size:
                raise ValueError(f"wrong size: got {written} bytes, expected {size}")
            if digest != checksum:
                raise ValueError(f"{algorithm} mismatch: got {digest}, expected {checksum}")
            os.replace(tmp_name, dest)
            return dest
        except (OSError, ValueError, http.client.HTTPException) as e:
            reason = f"HTTP {e.code}" if isinstance(e, urllib.error.HTTPError) else str(e) or type(e).__name__
            failures.append(f"  {url}: {reason}")
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    raise DownloadError(
        f"could not download {dest.name}; every mirror failed:\n" + "\n".join(failures) + "\n"
        f"Check your network connection, or fetch the file by hand into {dest.parent} "
        "(or the directory GIBBON_DATA points at)."
    )
