"""Fixtures for the gibbon.data tests: an isolated data environment and a local HTTP server."""

from __future__ import annotations

import http.server
import threading

import pytest

from gibbon.data import mnist


@pytest.fixture(autouse=True)
def _isolated_data_env(monkeypatch, tmp_path_factory):
    """No GIBBON_DATA from the caller, and an empty MNIST download cache."""
    monkeypatch.delenv("GIBBON_DATA", raising=False)
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setattr(mnist, "cache_dir", lambda: cache)


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict  # path -> bytes
    truncated: set  # paths whose body is cut short of the advertised Content-Length

    def do_GET(self):  # noqa: N802 - http.server API
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in self.truncated else body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """A server on 127.0.0.1 (port 0); fill ``server.files[path] = bytes`` and use ``server.url``."""
    handler = type("Handler", (_Handler,), {"files": {}, "truncated": set()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.files, server.truncated = handler.files, handler.truncated
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)
