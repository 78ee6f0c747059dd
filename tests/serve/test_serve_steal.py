"""`gibbon steal` against the real server: a knockoff copy over HTTP counted by the server, its
budget stopping the theft cleanly, and one-line errors (no retry storm) for a wrong token or a dead server."""

from __future__ import annotations

import json
import time

import httpx
import torch
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


def test_the_server_poisons_its_predictions_with_mad(make_server, digits_sets, local_model):
    """--mad-eps 0.5: every answer moves by L1 0.5 at most, keeps its top-1 label, and moves on average."""
    proc = make_server("--mad-eps", "0.5").start()
    x = digits_sets[1].x[:64]
    served = HttpOracle(proc.url, TOKENS["user"][0])(x)
    with torch.no_grad():
        true = local_model(x).softmax(1)
    moved = (served - true).abs().sum(1)
    assert torch.allclose(served.sum(1), torch.ones(64), atol=1e-4)
    assert float(moved.max()) <= 0.5 + 1e-4 and float(moved.mean()) >= 0.3  # most answers use the whole budget
    assert bool((served.argmax(1) == true.argmax(1)).all())


def test_a_bad_mad_budget_is_one_line(monkeypatch, capsys, model_path, tokens_file):
    code = run_cli(monkeypatch, "serve", "--model", str(model_path), "--tokens-file", str(tokens_file), "--mad-eps", "3")
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "--mad-eps is an L1 distance" in err
