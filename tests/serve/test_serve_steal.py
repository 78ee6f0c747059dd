"""`gibbon steal` against the real server: a knockoff copy over HTTP counted by the server, its
budget stopping the theft cleanly, and one-line errors (no retry storm) for a wrong token or a dead server."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from _helpers import run_cli
from _serve import TOKENS, auth, free_port

from gibbon.oracles import HttpOracle
from gibbon.oracles.http import ServerError


def usage(server, name) -> int:
    return httpx.get(f"{server.url}/v1/usage", headers=auth(name)).json()["queries"]


def _steal(monkeypatch, server_url, token, tmp_path, *extra):
    return run_cli(monkeypatch, "steal", "--oracle", server_url, "--token", token, "--dataset", "digits",
                   "--pool", "digits:train", "--arch", "mlp-200-200", "--min-steps", "200",
                   "--out", str(tmp_path / "copy.safetensors"), "--json", str(tmp_path / "steal.json"), *extra)


def test_knockoff_over_http_is_counted_by_the_server(monkeypatch, server, tmp_path):
    before = usage(server, "steal")
    assert _steal(monkeypatch, server.url, TOKENS["steal"][0], tmp_path, "--budget", "500",
                  "--fidelity-queries", "100") == 0
    summary = json.loads((tmp_path / "steal.json").read_text())
    assert usage(server, "steal") - before == summary["queries_spent"] == 500
    assert summary["fidelity"] >= 0.85  # measured 0.93 against the served LeNet-5


def test_the_servers_budget_stops_the_theft_cleanly(monkeypatch, server, tmp_path):
    """The token allows 40 queries; --budget asks 300: the copy is trained on the 40 answers paid for."""
    assert _steal(monkeypatch, server.url, TOKENS["steal-small"][0], tmp_path, "--budget", "300") == 0
    summary = json.loads((tmp_path / "steal.json").read_text())
    assert summary["stopped_by_budget"] and summary["answers"] == summary["queries_spent"] == 40
    assert usage(server, "steal-small") == 40


def test_a_wrong_token_is_one_line_and_one_request(monkeypatch, capsys, server, tmp_path):
    started = time.perf_counter()
    code = _steal(monkeypatch, server.url, "not-a-valid-token-zzzzzz", tmp_path, "--budget", "100")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "cannot use the server" in err and "401" in err and "Traceback" not in err
    assert time.perf_counter() - started < 10
    sent = []
    client = httpx.Client(base_url=server.url, event_hooks={"request": [sent.append]})
    with pytest.raises(ServerError, match="401"):
        HttpOracle(server.url, "not-a-valid-token-zzzzzz", client=client)
    assert len(sent) == 1  # a refused token is never retried


def test_an_unreachable_server_is_one_line_after_a_few_retries(monkeypatch, capsys, tmp_path):
    started = time.perf_counter()
    code = _steal(monkeypatch, f"http://127.0.0.1:{free_port()}", "some-token-aaaaaaaaaaaa", tmp_path, "--budget", "100")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "unreachable after 3 attempts" in err and "Traceback" not in err
    assert time.perf_counter() - started < 10
