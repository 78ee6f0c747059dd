"""The real server over loopback: every status code of the issue, and it keeps serving after each."""

from __future__ import annotations

import base64
import json
import time

import httpx
import numpy as np
import pytest
import torch
from _serve import MAX_BATCH, MAX_BODY, TOKENS, auth

from gibbon.serve.payload import encode_binary


def post(server, name, body, raw: bytes | None = None, **headers):
    hdrs = {**(auth(name) if name else {}), "Content-Type": "application/json", **headers}
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{server.url}/v1/predict", content=content, headers=hdrs, timeout=30)


def nested(x: torch.Tensor) -> dict:
    return {"inputs": x.tolist()}


def assert_error(response, status: int, code: str):
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert "Traceback" not in response.text and "File \"" not in response.text


def assert_serving(server, x):
    response = post(server, "user", nested(x[:2]))
    assert response.status_code == 200, response.text
    assert len(response.json()["labels"]) == 2


def test_healthz_needs_no_token_and_model_does(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    response = httpx.get(f"{server.url}/v1/model")
    assert_error(response, 401, "unauthorized")
    info = httpx.get(f"{server.url}/v1/model", headers=auth("user")).json()
    assert info["input_shape"] == [1, 8, 8] and info["bounds"] == [0.0, 1.0] and info["num_classes"] == 10
    assert info["max_batch"] == MAX_BATCH and info["output"] == "probs"


@pytest.mark.parametrize("header", [None, "Bearer not-a-valid-token-000000", "Basic dXNlcjpwYXNz",
                                    f"Token {TOKENS['user'][0]}", "Bearer"])
def test_missing_or_invalid_token_is_401(server, digits_sets, header):
    x = digits_sets[1].x
    headers = {"Content-Type": "application/json", **({"Authorization": header} if header else {})}
    response = httpx.post(f"{server.url}/v1/predict", content=json.dumps(nested(x[:1])), headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_serving(server, x)


def test_repeated_failed_logins_get_429_then_the_server_keeps_serving(make_server, digits_sets):
    server = make_server("--auth-failures", "3", "--auth-failure-rate", "0.001").start()
    bad = {"Authorization": "Bearer not-a-valid-token-000000"}
    for _ in range(3):
        assert_error(httpx.get(f"{server.url}/v1/usage", headers=bad), 401, "unauthorized")
    blocked = httpx.get(f"{server.url}/v1/usage", headers=auth("user"))  # loopback is one address
    assert_error(blocked, 429, "too_many_failed_logins")
    assert int(blocked.headers["retry-after"]) >= 1
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}


def test_predictions_match_the_model_in_both_forms(server, digits_sets, local_model):
    x, y = digits_sets[1].x[:40], digits_sets[1].y[:40]
    a = post(server, "user", nested(x))
    b = post(server, "user", encode_binary(x))
    assert a.status_code == b.status_code == 200
    probs = torch.tensor(b.json()["probabilities"])
    with torch.no_grad():
        want = local_model(x).softmax(1)
    assert torch.allclose(probs, want, atol=1e-5), float((probs - want).abs().max())
    assert a.json()["labels"] == b.json()["labels"] == want.argmax(1).tolist()
    assert (torch.tensor(a.json()["labels"]) == y).float().mean() >= 0.9
    assert int(b.headers["x-gibbon-queries-used"]) >= 80


def test_budget_spent_is_403_for_the_whole_request(server, digits_sets):
    x = digits_sets[1].x
    assert post(server, "small", encode_binary(x[:6])).status_code == 200
    over = post(server, "small", encode_binary(x[:6]))  # 6 + 6 > 10: refused whole, nothing answered
    assert_error(over, 403, "budget_exhausted")
    last = post(server, "small", encode_binary(x[:4]))
    assert last.status_code == 200 and last.headers["x-gibbon-budget-remaining"] == "0"
    assert_error(post(server, "small", encode_binary(x[:1])), 403, "budget_exhausted")
    usage = httpx.get(f"{server.url}/v1/usage", headers=auth("small")).json()
    assert usage["queries"] == 10 and usage["remaining"] == 0
    assert_serving(server, x)


def test_over_the_rate_is_429_with_retry_after(server, digits_sets):
    x = digits_sets[1].x
    assert post(server, "slow", encode_binary(x[:2])).status_code == 200  # the burst of 2 queries
    response = post(server, "slow", encode_binary(x[:1]))
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1
    time.sleep(1.1)  # a refill of one query: a token with nothing left is refused (429) before its body is read
    assert_error(post(server, "slow", encode_binary(x[:3])), 413, "batch_too_large")  # over the burst: never fits
    assert_serving(server, x)


def test_oversize_body_and_batch_are_413(server, digits_sets):
    x = digits_sets[1].x
    big = post(server, "user", None, raw=b'{"inputs": [' + b"0.5," * (MAX_BODY // 4) + b"0.5]}")
    assert_error(big, 413, "body_too_large")
    many = torch.rand(MAX_BATCH + 1, 1, 8, 8)
    assert_error(post(server, "user", encode_binary(many)), 413, "batch_too_large")
    assert_error(post(server, "user", nested(many)), 413, "batch_too_large")
    chunked = httpx.post(f"{server.url}/v1/predict", headers={**auth("user"), "Content-Type": "application/json"},
                         content=iter([b"[" + b"1," * 50_000] * 5))  # streamed, no Content-Length
    assert_error(chunked, 413, "body_too_large")
    assert_serving(server, x)


def _binary(arr: np.ndarray, shape=None) -> dict:
    return {"data": base64.b64encode(arr.astype("<f4").tobytes()).decode(), "shape": list(shape or arr.shape)}


def bad_bodies(x: torch.Tensor) -> list:
    one = x[:1].numpy()
    nan = one.copy()
    nan[0, 0, 3, 3] = np.nan
    return [
        ("NaN, binary", _binary(nan)),
        ("NaN, JSON literal", None, json.dumps(nested(torch.from_numpy(nan))).encode()),
        ("infinity", None, json.dumps({"inputs": [[[[float("inf")] * 8] * 8]]}).encode()),
        ("above bounds", _binary(one + 1.5)),
        ("below bounds", _binary(one - 0.1)),
        ("wrong shape, nested", {"inputs": torch.rand(1, 1, 7, 8).tolist()}),
        ("wrong shape, binary", _binary(torch.rand(1, 1, 8, 7).numpy())),
        ("ragged", {"inputs": [[[[0.5] * 8] * 7 + [[0.5] * 9]]]}),
        ("rank 3", {"inputs": torch.rand(1, 8, 8).tolist()}),
        ("strings", {"inputs": [[[["0.5"] * 8] * 8]]}),
        ("booleans", {"inputs": [[[[True] * 8] * 8]]}),
        ("bytes do not fit the shape", _binary(one, shape=[2, 1, 8, 8])),
        ("bad base64", {"data": "not base64!!", "shape": [1, 1, 8, 8]}),
        ("float shape", {"data": _binary(one)["data"], "shape": [1.0, 1, 8, 8]}),
        ("both forms", {**nested(x[:1]), **_binary(one)}),
        ("extra key", {**nested(x[:1]), "debug": True}),
        ("empty batch", {"inputs": []}),
        ("zero rows", _binary(one[:0], shape=[0, 1, 8, 8])),
        ("negative rows", {"data": "", "shape": [-1, 1, 8, 8]}),
        ("huge integer", {"inputs": [[[[10 ** 400] * 8] * 8]]}),
    ]


def test_invalid_inputs_are_422_and_the_server_keeps_serving(server, digits_sets):
    x = digits_sets[1].x
    for name, body, *raw in bad_bodies(x):
        response = post(server, "user", body, raw=raw[0] if raw else None)
        assert response.status_code == 422, (name, response.status_code, response.text)
        assert_error(response, 422, "invalid_input")
    for raw in (b"not json", b"[1, 2, 3]", b"", b"\xff\xfe", b"[" * 90_000 + b"]" * 90_000):  # the last: too deep
        assert_error(post(server, "user", None, raw=raw), 400, "invalid_json")
    assert_serving(server, x)
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_admin_alerts_need_an_admin_token(server, digits_sets):
    assert_error(httpx.get(f"{server.url}/v1/admin/alerts"), 401, "unauthorized")
    assert_error(httpx.get(f"{server.url}/v1/admin/alerts", headers=auth("user")), 403, "forbidden")
    view = httpx.get(f"{server.url}/v1/admin/alerts", headers=auth("admin")).json()
    names = {t["name"] for t in view["tokens"]}
    assert set(TOKENS) == names and isinstance(view["alerts"], list)


def test_unknown_routes_and_methods_answer_json(server):
    assert_error(httpx.get(f"{server.url}/nope"), 404, "not_found")
    assert_error(httpx.get(f"{server.url}/v1/predict", headers=auth("user")), 405, "method_not_allowed")


def test_openapi_schema_is_published(server):
    schema = httpx.get(f"{server.url}/openapi.json").json()
    predict = schema["paths"]["/v1/predict"]["post"]
    assert "requestBody" in predict and {"200", "401", "403", "413", "422", "429"} <= set(predict["responses"])


def test_raw_tokens_never_reach_the_logs(server, digits_sets):
    assert post(server, "user", encode_binary(digits_sets[1].x[:1])).status_code == 200
    text = server.output() + "".join(p.read_text() for p in server.log_dir.rglob("*") if p.is_file())
    for token, _ in TOKENS.values():
        assert token not in text
