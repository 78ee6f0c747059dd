"""Membership inference against the served API over real HTTP: the same answer as on the model itself,
every query counted by the client and by the server, and a wrong token or a spent budget as one line."""

from __future__ import annotations

import json

import httpx
import pytest
from _helpers import run_cli
from _serve import TOKENS, auth

from gibbon.oracles import HttpOracle, Oracle
from gibbon.privacy import loss_threshold_attack


def usage(server, name) -> int:
    return httpx.get(f"{server.url}/v1/usage", headers=auth(name)).json()["queries"]


def test_membership_inference_over_http_equals_the_local_attack(server, digits_sets, local_model):
    train, test = digits_sets
    members, non_members = (train.x[:80], train.y[:80]), (test.x[:80], test.y[:80])
    before = usage(server, "user")
    with HttpOracle(server.url, TOKENS["user"][0], output="scores", batch_size=50) as remote:
        oracle = Oracle(remote)
        over_http = loss_threshold_attack(oracle, members, non_members, batch_size=64)
    local = loss_threshold_attack(local_model, members, non_members)
    # the server answers float32 probabilities: the scores agree to rounding, the ranking and so the ROC exactly
    assert over_http.auc == pytest.approx(local.auc, abs=1e-3)
    assert over_http.tpr_at_fpr == pytest.approx(local.tpr_at_fpr, abs=1 / 80)
    assert oracle.total == remote.total == 160
    assert usage(server, "user") - before == 160


def test_cli_mia_takes_a_server_url_and_the_token_from_the_environment(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GIBBON_TOKEN", TOKENS["user"][0])
    before = usage(server, "user")
    code = run_cli(monkeypatch, "privacy", "mia", "--oracle", server.url, "--dataset", "digits", "--n", "30",
                   "--out-dir", str(tmp_path))
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "60 queries asked" in printed and usage(server, "user") - before == 60
    saved = json.loads((tmp_path / "membership.json").read_text())
    assert saved["members"] == saved["non_members"] == 30 and 0 <= saved["auc"] <= 1


def test_cli_mia_wrong_token_and_spent_budget_are_one_line_errors(server, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GIBBON_TOKEN", raising=False)
    base = ["privacy", "mia", "--oracle", server.url, "--dataset", "digits", "--out-dir", str(tmp_path)]

    def error() -> str:
        return " ".join(capsys.readouterr().err.split())  # rich wraps long lines

    assert run_cli(monkeypatch, *base, "--n", "5") == 2
    assert "GIBBON_TOKEN" in error()
    assert run_cli(monkeypatch, *base, "--n", "5", "--token", "not-a-token-zzzzzzzz") == 2
    assert "401" in error()  # refused at once: 401 is not retried
    # this token's budget is 10 queries: 2 x 30 cannot fit
    assert run_cli(monkeypatch, *base, "--n", "30", "--token", TOKENS["mia-small"][0]) == 2
    err = error()
    assert "budget" in err and "--n" in err and "Traceback" not in err, err
