"""Issue 23's server findings, one test each (docs/security.md lists them with before/after)."""

from __future__ import annotations

import json
import os
import socket
import stat
import time

import httpx
import pytest
from _serve import TOKENS, auth

from gibbon.core.checks import GibbonInputError
from gibbon.serve.querylog import JsonlLog, QueryLogs
from gibbon.serve.state import Deployment
from gibbon.serve.tokens import TokenStore, load_tokens_file

META = {"projection": "gaussian", "dim": 4}


def _store(tokens_file):
    return TokenStore(load_tokens_file(tokens_file))


# 2. a damaged line loses nothing after it --------------------------------------------------

def test_a_damaged_line_is_skipped_and_counted_and_every_later_line_kept(tmp_path):
    path = tmp_path / "q.jsonl"
    log = JsonlLog(path)
    for seq in (1, 2, 3, 4):
        log.append({"seq": seq, "total": 10 * seq})
    log.close()
    lines = path.read_bytes().splitlines(keepends=True)
    flipped = lines[1].replace(b'"total":20', b'"total":90')  # valid JSON, wrong CRC
    path.write_bytes(lines[0] + b"{not json\n" + flipped + lines[2] + lines[3])
    log = JsonlLog(path)
    assert [r["seq"] for r in log.records] == [1, 3, 4] and log.damaged == [2, 3]
    log.append({"seq": 5, "total": 50})
    log.close()
    assert [r["seq"] for r in JsonlLog(path).records] == [1, 3, 4, 5]


def test_a_damaged_log_line_never_refunds_budget_on_restart(tmp_path, tokens_file, local_model, digits_sets):
    card = local_model.gibbon_card
    x = digits_sets[1].x
    dep = Deployment(local_model, card, _store(tokens_file), tmp_path / "logs")
    state = dep.authenticate(auth("small")["Authorization"])
    for rows in (3, 2, 4):
        dep.predict(state, x[:rows])
    dep.close()
    path = tmp_path / "logs" / "queries" / f"{state.spec.id}.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b'{"seq": 2, "garbage\n' + lines[2])  # line 2 damaged
    again = Deployment(local_model, card, _store(tokens_file), tmp_path / "logs")
    state = again.authenticate(auth("small")["Authorization"])
    assert state.used == 9 and state.remaining() == 1  # the cumulative total of line 3 survives
    assert again.monitor()["damaged_log_lines"] == {path.name: [2]}
    again.close()


def test_a_record_of_the_wrong_shape_is_skipped_not_a_crash(tmp_path, tokens_file, local_model, digits_sets):
    dep = Deployment(local_model, local_model.gibbon_card, _store(tokens_file), tmp_path / "logs")
    state = dep.authenticate(auth("small")["Authorization"])
    dep.predict(state, digits_sets[1].x[:2])
    state.log.append({"seq": 2, "rows": 1})  # well-formed JSON with a good CRC, but no total/proj
    dep.close()
    again = Deployment(local_model, local_model.gibbon_card, _store(tokens_file), tmp_path / "logs")
    assert again.authenticate(auth("small")["Authorization"]).used == 2
    again.close()


# 3. one server per log folder ----------------------------------------------------------------

def test_a_second_server_on_one_log_dir_fails_fast(tmp_path):
    first = QueryLogs(tmp_path / "logs", META)
    with pytest.raises(GibbonInputError, match=f"in use by another gibbon serve \\(pid {os.getpid()}\\)"):
        QueryLogs(tmp_path / "logs", META)
    first.close()
    QueryLogs(tmp_path / "logs", META).close()  # released on close


def test_a_second_server_process_exits_2_with_the_message(make_server, tmp_path):
    make_server(log_dir=tmp_path / "shared").start()
    second = make_server(log_dir=tmp_path / "shared")
    with pytest.raises(RuntimeError, match="exited with 2"):
        second.start(timeout=30)
    assert "in use by another gibbon serve" in " ".join(second.output().split())  # the console wraps lines


# 8. private files, Allow on 405 ----------------------------------------------------------------

def test_logs_are_private_files_in_private_folders(tmp_path, tokens_file, local_model, digits_sets):
    old = os.umask(0o022)
    try:
        dep = Deployment(local_model, local_model.gibbon_card, _store(tokens_file), tmp_path / "logs")
        dep.predict(dep.authenticate(auth("user")["Authorization"]), digits_sets[1].x[:1])
        dep.close()
    finally:
        os.umask(old)
    root = tmp_path / "logs"
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"server.json", "server.lock", "alerts.jsonl"} and len(files) >= 4
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for d in (root, root / "queries"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_a_405_says_which_methods_are_allowed(server):
    response = httpx.get(f"{server.url}/v1/predict", headers=auth("user"))
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert httpx.delete(f"{server.url}/v1/usage", headers=auth("user")).headers["allow"] == "GET"


# 4. X-Forwarded-For is not believed by default ------------------------------------------------

def _failed_logins_until_blocked(server, forwarded: bool) -> list[int]:
    codes = []
    for i in range(6):
        headers = {"Authorization": "Bearer not-a-valid-token-000000"}
        if forwarded:
            headers["X-Forwarded-For"] = f"203.0.113.{i}"  # a new 'address' each time
        codes.append(httpx.get(f"{server.url}/v1/usage", headers=headers).status_code)
    return codes


def test_x_forwarded_for_cannot_dodge_the_login_throttle(make_server, tmp_path):
    server = make_server("--auth-failures", "3", "--auth-failure-rate", "0.001").start()
    assert _failed_logins_until_blocked(server, forwarded=True) == [401, 401, 401, 429, 429, 429]
    # behind a proxy the operator names, the header is the client: each address has its own allowance
    proxied = make_server("--auth-failures", "3", "--auth-failure-rate", "0.001", "--forwarded-allow-ips",
                          "127.0.0.1", log_dir=tmp_path / "proxied").start()
    assert _failed_logins_until_blocked(proxied, forwarded=True) == [401] * 6


# 5. refusals read no body; slow clients are cut off; connections are capped -------------------

def _raw_request(server, head: bytes, timeout: float = 5.0) -> bytes:
    """Send ``head`` (and whatever part of a body) on a fresh socket; the whole response that comes back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _length(response: bytes) -> int:
    for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _head(token: str, length: int) -> bytes:
    return (f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()


def test_refusals_come_before_the_body_is_read(make_server, digits_sets):
    server = make_server("--max-body-bytes", str(8 * 1024 * 1024)).start()
    x = digits_sets[1].x
    for _ in range(10):  # spend the 'small' token's budget of 10
        assert httpx.post(f"{server.url}/v1/predict", json={"inputs": x[:1].tolist()},
                          headers=auth("small")).status_code == 200
    # the head announces 8 MiB that never come: only an answer that does not wait for them arrives
    start = time.monotonic()
    for token, status in ((TOKENS["small"][0], b" 403 "), ("not-a-valid-token-000000", b" 401 ")):
        answer = _raw_request(server, _head(token, 8 * 1024 * 1024 - 1))
        assert status in answer.split(b"\r\n")[0], answer[:200]
    assert time.monotonic() - start < 4.0


def test_slow_heads_and_slow_bodies_are_cut_off(make_server):
    server = make_server("--head-timeout", "1", "--body-timeout", "1").start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")  # ... and the rest of the head never comes
        start = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server
        assert 0.5 < time.monotonic() - start < 5
    answer = _raw_request(server, _head(TOKENS["user"][0], 1000) + b'{"inputs": [', timeout=10)
    assert b" 408 " in answer.split(b"\r\n")[0] and b"request_timeout" in answer
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_connections_over_the_cap_get_503(make_server):
    server = make_server("--max-connections", "4", "--head-timeout", "30").start()
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # open, head incomplete
        time.sleep(0.3)
        assert httpx.get(f"{server.url}/healthz").status_code == 503
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_a_world_readable_tokens_file_is_warned_about(make_server, tokens_file):
    os.chmod(tokens_file, 0o644)
    server = make_server().start()
    assert "readable by other users" in server.output() and "chmod 600" in server.output()
    server.stop()


def test_the_log_files_are_json_lines_with_a_crc(tmp_path):
    log = JsonlLog(tmp_path / "q.jsonl")
    log.append({"seq": 1, "labels": [3]})
    log.close()
    record = json.loads((tmp_path / "q.jsonl").read_text())
    assert set(record) == {"seq", "labels", "crc"} and len(record["crc"]) == 8
