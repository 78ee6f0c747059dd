"""Hypothesis-generated requests against the real server: never a 5xx, always a JSON answer, still serving.

The payloads follow the OpenAPI schema's two request forms loosely (right keys with wrong values,
wrong keys, wrong nesting, NaN/inf/huge numbers, strings, booleans, bad base64, odd shapes) plus
arbitrary bytes and arbitrary headers; a bounded number of examples, no deadline.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from _serve import MAX_BATCH, TOKENS, auth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gibbon.serve.payload import encode_binary

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10 ** 30, 10 ** 30),
                    st.floats(0, 1), st.booleans(), st.none(), st.text(max_size=3))
leaves = st.recursive(numbers, lambda kids: st.lists(kids, max_size=9), max_leaves=300)


@st.composite
def good_ish_nested(draw):
    """Shape (B, 1, 8, 8)-like nests with a few dimensions or values off."""
    b = draw(st.integers(0, 3))
    dims = [b, draw(st.sampled_from([1, 1, 2])), draw(st.sampled_from([8, 8, 7])), draw(st.sampled_from([8, 8, 0]))]
    value = draw(st.one_of(st.floats(0, 1), numbers))

    def nest(d):
        return value if d == len(dims) else [nest(d + 1) for _ in range(dims[d])]
    return {"inputs": nest(0)}


@st.composite
def binary_ish(draw):
    shape = draw(st.lists(st.one_of(st.integers(-2, 70), st.sampled_from([1, 8]), st.floats(0, 9)), max_size=5))
    raw = draw(st.one_of(st.binary(max_size=2048), st.just(b"\x00\x00\x00\x3f" * 64)))
    data = draw(st.one_of(st.just(base64.b64encode(raw).decode()), st.text(max_size=40), numbers))
    return {"data": data, "shape": shape}


bodies = st.one_of(
    good_ish_nested(), binary_ish(),
    st.dictionaries(st.sampled_from(["inputs", "data", "shape", "x", ""]), leaves, max_size=3),
    leaves,
)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:  # keep-alive: one connection for all examples
        yield c


def send(client, content: bytes):
    return client.post("/v1/predict", content=content, headers={"Content-Type": "application/json", **auth("fuzz")})


def check(response):
    assert response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    if response.status_code == 200:
        assert set(body) >= {"labels"} and len(body["labels"]) <= MAX_BATCH
    else:
        assert set(body) == {"error", "detail"} and "Traceback" not in response.text


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=bodies)
def test_generated_json_bodies_never_5xx(client, body):
    check(send(client, json.dumps(body, allow_nan=True).encode()))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(raw=st.binary(max_size=512), content_type=st.sampled_from(["application/json", "text/plain", "", "x/y"]),
       authz=st.one_of(st.just(f"Bearer {TOKENS['fuzz'][0]}"), st.text(alphabet=st.characters(
           min_codepoint=32, max_codepoint=126), max_size=40)))
def test_generated_bytes_and_headers_never_5xx(client, raw, content_type, authz):
    response = client.post("/v1/predict", content=raw,
                           headers={"Content-Type": content_type, "Authorization": authz.strip() or "x"})
    check(response)


@pytest.mark.parametrize("path", ["/v1/model", "/v1/usage", "/v1/admin/alerts", "/healthz", "/v1/predict/x"])
def test_other_routes_never_5xx(server, path):
    for method in ("GET", "POST", "PUT", "DELETE"):
        response = httpx.request(method, f"{server.url}{path}", headers=auth("fuzz"), content=b"{}")
        assert response.status_code < 500 and response.headers["content-type"].startswith("application/json")


def test_still_serving_after_the_fuzz(client, digits_sets):
    response = send(client, json.dumps(encode_binary(digits_sets[1].x[:3])).encode())
    assert response.status_code == 200 and len(response.json()["labels"]) == 3
