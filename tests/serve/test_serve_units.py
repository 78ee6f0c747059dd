"""In-process pieces: token files, the rate bucket, payload checks, answer styles, the torn-tail log, the CLI."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from _helpers import run_cli

from gibbon import zoo
from gibbon.core.checks import GibbonInputError
from gibbon.serve.payload import Rejected, encode_binary, parse_batch, response_body
from gibbon.serve.querylog import JsonlLog
from gibbon.serve.state import Deployment, Settings
from gibbon.serve.tokens import FailedAuthLimiter, TokenBucket, TokenStore, load_tokens_file, tokens_from_env

SECRET = "s3cret-token-for-units-000"


def test_tokens_file_yaml_with_digests_and_defaults(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text(f"defaults: {{budget: 50, rate: 5, burst: 7}}\ntokens:\n  - {{token: {SECRET}, name: a}}\n"
                    f"  - {{sha256: {hashlib.sha256(b'other-token-0123456789').hexdigest()}, admin: true, "
                    "budget: null}\n")
    a, b = load_tokens_file(path)
    assert (a.name, a.budget, a.rate, a.burst, a.admin) == ("a", 50, 5.0, 7, False)
    assert b.budget is None and b.admin and b.name == b.id
    store = TokenStore([a, b])
    assert store.lookup(SECRET) is a and store.lookup("other-token-0123456789") is b
    assert store.lookup("nope-nope-nope-nope") is None and store.lookup(None) is None
    assert SECRET not in repr(a)


@pytest.mark.parametrize("doc, message", [
    ({"tokens": [{"token": "short"}]}, "at least 16"),
    ({"tokens": [{"token": SECRET, "budget": -1}]}, "budget must be a whole number"),
    ({"tokens": [{"token": SECRET, "rate": "fast"}]}, "rate must be a number"),
    ({"tokens": [{"token": SECRET, "admin": "yes"}]}, "admin must be true or false"),
    ({"tokens": [{"token": SECRET, "colour": 1}]}, "unknown field"),
    ({"tokens": [{"token": SECRET}, {"token": SECRET}]}, "listed twice"),
    ({"tokens": [{"sha256": "abc"}]}, "64 hex digits"),
    ({"tokens": []}, "no tokens"),
    ({"users": []}, "'tokens' list"),
])
def test_bad_token_files_say_what_to_fix(tmp_path, doc, message):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(GibbonInputError, match=message):
        load_tokens_file(path)


def test_tokens_from_the_environment_get_the_defaults():
    specs = tokens_from_env(f"{SECRET}, other-token-0123456789,", {"budget": 9, "rate": 2.0, "burst": 3})
    assert [(s.budget, s.rate, s.burst) for s in specs] == [(9, 2.0, 3)] * 2


def test_token_bucket_refills_at_the_rate():
    now = [0.0]
    bucket = TokenBucket(rate=4.0, burst=8, clock=lambda: now[0])
    assert bucket.take(8) == 0.0 and bucket.take(2) == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take(2) == 0.0 and bucket.take(1) == pytest.approx(0.25)
    now[0] = 100.0
    assert bucket.take(8) == 0.0 and bucket.take(1) > 0  # never more than the burst saved up


def test_parse_batch_accepts_both_forms_and_refuses_the_rest():
    x = torch.rand(3, 1, 2, 2)
    assert torch.equal(parse_batch(encode_binary(x), (1, 2, 2), (0, 1), 4), x)
    assert torch.allclose(parse_batch({"inputs": x.tolist()}, (1, 2, 2), (0, 1), 4), x)
    with pytest.raises(Rejected) as err:
        parse_batch(encode_binary(torch.rand(5, 1, 2, 2)), (1, 2, 2), (0, 1), 4)
    assert err.value.status == 413
    with pytest.raises(Rejected, match="bounds"):
        parse_batch(encode_binary(x * 3), (1, 2, 2), (0, 1), 4)


def test_answer_styles_and_rounding():
    probs = torch.tensor([[0.1234, 0.6543, 0.2223]])
    assert response_body(probs, "label", 2, None) == {"labels": [1]}
    assert response_body(probs, "probs", 2, 2)["probabilities"] == [[0.12, 0.65, 0.22]]
    assert response_body(probs, "topk", 2, None)["topk"][0][1]["label"] == 2


def test_deployment_answers_in_the_configured_style(tmp_path, local_model, model_path, digits_sets):
    card = zoo.io.read_card(model_path)
    store = TokenStore(tokens_from_env(SECRET))
    dep = Deployment(local_model, card, store, tmp_path / "logs", Settings(output="topk", topk=3, decimals=3))
    state = dep.authenticate(f"Bearer {SECRET}")
    body, headers = dep.predict(state, digits_sets[1].x[:4])
    assert len(body["topk"]) == 4 and all(len(row) == 3 for row in body["topk"])
    assert headers["X-Gibbon-Queries-Used"] == "4" and "labels" not in body
    with pytest.raises(Rejected) as err:
        dep.authenticate("Bearer wrong-wrong-wrong-wrong")
    assert err.value.status == 401
    line = json.loads((tmp_path / "logs" / "queries" / f"{state.spec.id}.jsonl").read_text())
    assert set(line) == {"seq", "t", "rows", "total", "labels", "proj", "crc"}  # no raw inputs without --log-inputs
    dep.close()


def test_failed_logins_are_throttled_per_address_and_refill():
    now = [0.0]
    limiter = FailedAuthLimiter(burst=3, rate=0.5, max_clients=2, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.wait("a") == 0.0
        limiter.failed("a")
    assert limiter.wait("a") == pytest.approx(2.0) and limiter.wait("b") == 0.0
    now[0] = 2.0  # one failure's worth refilled
    assert limiter.wait("a") == 0.0
    limiter.failed("a")
    assert limiter.wait("a") == pytest.approx(2.0)
    limiter.failed("b")
    limiter.failed("c")  # over max_clients: "a" (oldest, not full) or "b" goes, memory stays bounded
    assert len(limiter.buckets) == 2 and "c" in limiter.buckets
    with pytest.raises(GibbonInputError, match="burst >= 1"):
        FailedAuthLimiter(burst=0, rate=1.0)


def test_a_throttled_address_is_refused_even_with_a_valid_token(tmp_path, local_model, model_path):
    card = zoo.io.read_card(model_path)
    dep = Deployment(local_model, card, TokenStore(tokens_from_env(SECRET)), tmp_path / "logs",
                     Settings(auth_failures=2, auth_failure_rate=1e-3))
    for _ in range(2):
        with pytest.raises(Rejected) as err:
            dep.authenticate("Bearer wrong-wrong-wrong-wrong", "10.0.0.9")
        assert err.value.status == 401
    with pytest.raises(Rejected) as err:
        dep.authenticate(f"Bearer {SECRET}", "10.0.0.9")  # a guess made while blocked is never confirmed
    assert (err.value.status, err.value.code) == (429, "too_many_failed_logins")
    assert int(err.value.headers["Retry-After"]) >= 1
    assert dep.authenticate(f"Bearer {SECRET}", "10.0.0.10").spec.name  # other addresses are not affected
    dep.close()


def test_an_idempotency_key_makes_a_retry_free_even_after_a_restart(tmp_path, local_model, model_path, digits_sets):
    card, x = zoo.io.read_card(model_path), digits_sets[1].x
    store = TokenStore(tokens_from_env(SECRET, {"budget": 4}))
    dep = Deployment(local_model, card, store, tmp_path / "logs")
    state = dep.authenticate(f"Bearer {SECRET}")
    first, headers = dep.predict(state, x[:4], "key-0000000001")
    assert state.used == 4 and "X-Gibbon-Replayed" not in headers and headers["X-Gibbon-Budget-Remaining"] == "0"
    again, headers = dep.predict(state, x[:4].clone(), "key-0000000001")  # budget spent: a replay is still answered
    assert again == first and headers["X-Gibbon-Replayed"] == "true" and headers["X-Gibbon-Request"] == "1"
    assert state.used == 4
    with pytest.raises(Rejected) as err:
        dep.predict(state, x[4:8], "key-0000000001")
    assert (err.value.status, err.value.code) == (422, "idempotency_key_reused")
    with pytest.raises(Rejected) as err:
        dep.predict(state, x[:1], "bad key!")
    assert err.value.status == 422
    with pytest.raises(Rejected) as err:
        dep.predict(state, x[:1], "key-0000000002")  # a new key is a new query: over budget
    assert err.value.code == "budget_exhausted"
    state.in_flight.add("key-0000000003")
    with pytest.raises(Rejected) as err:
        dep.predict(state, x[:1], "key-0000000003")
    assert (err.value.status, err.value.code) == (409, "request_in_progress")
    dep.close()
    log_lines = (tmp_path / "logs" / "queries" / f"{state.spec.id}.jsonl").read_text().splitlines()
    assert len(log_lines) == 1 and json.loads(log_lines[0])["key"] == "key-0000000001"
    restarted = Deployment(local_model, card, store, tmp_path / "logs")  # keys are rebuilt from the log
    state = restarted.authenticate(f"Bearer {SECRET}")
    assert restarted.predict(state, x[:4], "key-0000000001")[0] == first and state.used == 4
    restarted.close()


def test_a_torn_last_line_is_cut_before_appending(tmp_path):
    path = tmp_path / "q.jsonl"
    log = JsonlLog(path)
    log.append({"seq": 1})
    log.append({"seq": 2})
    log.close()
    with open(path, "ab") as fh:
        fh.write(b'{"seq": 3, "ro')  # a crash in the middle of a write
    log = JsonlLog(path)
    assert [r["seq"] for r in log.records] == [1, 2]
    log.append({"seq": 3})
    log.close()
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_serve_without_tokens_is_a_clear_error(monkeypatch, model_path, capsys):
    monkeypatch.delenv("GIBBON_TOKENS", raising=False)
    assert run_cli(monkeypatch, "serve", "--model", str(model_path)) == 2
    assert "needs tokens" in capsys.readouterr().err
    monkeypatch.setenv("GIBBON_TOKENS", "short")
    assert run_cli(monkeypatch, "serve", "--model", str(model_path)) == 2
    assert "at least 16" in capsys.readouterr().err
    assert run_cli(monkeypatch, "serve", "--model", str(model_path), "--output", "logits") == 2


def _mock_server(output: str, failures: list[int]):
    """An httpx transport answering like gibbon serve with ``output``, failing first with the ``failures`` codes."""
    import httpx

    calls = []

    def handler(request):
        calls.append(request)
        if request.url.path == "/v1/model":
            return httpx.Response(200, json={"input_shape": [1, 2, 2], "num_classes": 3, "max_batch": 4,
                                             "output": output})
        if failures:
            return httpx.Response(failures.pop(0), json={"error": "x", "detail": "y"}, headers={"Retry-After": "0"})
        rows = json.loads(request.content)["shape"][0]
        if output == "topk":
            return httpx.Response(200, json={"topk": [[{"label": 2, "probability": 0.7},
                                                       {"label": 0, "probability": 0.2}]] * rows})
        return httpx.Response(200, json={"labels": [1] * rows})

    return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://mock"), calls


def test_http_oracle_decodes_topk_and_labels_and_retries_5xx():
    from gibbon.oracles import HttpOracle
    from gibbon.oracles.http import ServerError

    client, calls = _mock_server("topk", [503, 429])
    remote = HttpOracle("http://mock", "t" * 20, client=client, backoff=0.0, batch_size=10)
    scores = remote(torch.rand(6, 1, 2, 2))
    assert remote.batch_size == 4 and remote.requests == 2 and remote.retried == 2
    assert torch.allclose(scores[0], torch.tensor([0.2, 0.0, 0.7]))
    labels_client, _ = _mock_server("label", [])
    assert HttpOracle("http://mock", "t" * 20, client=labels_client)(torch.rand(3, 1, 2, 2)).tolist() == [1, 1, 1]
    with pytest.raises(GibbonInputError, match="labels only"):
        HttpOracle("http://mock", "t" * 20, client=_mock_server("label", [])[0], output="scores")
    failing, calls = _mock_server("topk", [500] * 4)
    with pytest.raises(ServerError, match="500"):
        HttpOracle("http://mock", "t" * 20, client=failing, retries=3, backoff=0.0)(torch.rand(1, 1, 2, 2))
    assert len(calls) == 1 + 4  # /v1/model, then the first try and 3 retries
    bad_request, calls = _mock_server("topk", [422])
    with pytest.raises(ServerError, match="422"):
        HttpOracle("http://mock", "t" * 20, client=bad_request, backoff=0.0)(torch.rand(1, 1, 2, 2))
    assert len(calls) == 2  # a 4xx other than 429 is not retried
