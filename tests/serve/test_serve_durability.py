"""Budgets, logs and detector state survive a restart, and ``kill -9`` loses no answered query."""

from __future__ import annotations

import json
import threading

import httpx
import torch
from _serve import auth

from gibbon.serve.payload import encode_binary


def predict(url, name, x):
    return httpx.post(f"{url}/v1/predict", json=encode_binary(x), headers=auth(name), timeout=30)


def admin_view(url) -> dict:
    view = httpx.get(f"{url}/v1/admin/alerts", headers=auth("admin")).json()
    return {t["name"]: t for t in view["tokens"]} | {"_alerts": view["alerts"]}


def near_duplicates(x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Synthetic queries one small sign step from natural ones (the Jacobian-augmentation pattern)."""
    gen = torch.Generator().manual_seed(seed)
    base = x[torch.randint(0, len(x), (n,), generator=gen)]
    step = 0.1 * torch.randint(0, 2, base.shape, generator=gen).mul(2).sub(1)
    return (base + step).clamp(0, 1)


def test_budgets_and_detector_state_survive_a_restart(make_server, digits_sets):
    train, test = digits_sets
    server = make_server("--prada-delta", "0.9", "--prada-min-distances", "200").start()
    assert predict(server.url, "small", test.x[:10]).status_code == 200  # the whole budget of 10
    for chunk in torch.cat([test.x[:60], near_duplicates(test.x[:60], 240)]).split(30):
        assert predict(server.url, "attacker", chunk).status_code == 200
    for chunk in train.x[:400].split(40):
        assert predict(server.url, "benign", chunk).status_code == 200
    before = admin_view(server.url)
    assert before["attacker"]["flagged"] and not before["benign"]["flagged"], before
    assert [a["name"] for a in before["_alerts"]] == ["attacker"]
    server.stop()

    server.start()
    after = admin_view(server.url)
    for name in ("small", "attacker", "benign"):
        for key in ("queries", "remaining", "flagged", "statistic", "distances"):
            assert after[name][key] == before[name][key], (name, key, after[name][key], before[name][key])
    assert after["_alerts"] == before["_alerts"]
    refused = predict(server.url, "small", test.x[:1])
    assert refused.status_code == 403 and refused.json()["error"] == "budget_exhausted"
    assert predict(server.url, "attacker", test.x[:3]).headers["x-gibbon-request"] == "11"  # numbering goes on
    server.stop()


def test_kill_9_loses_no_acknowledged_query(make_server, digits_sets):
    x = digits_sets[1].x
    server = make_server().start()
    acked, lock, stop = [], threading.Lock(), threading.Event()

    def client(offset: int):
        with httpx.Client(base_url=server.url, headers=auth("user"), timeout=10) as c:
            i = offset
            while not stop.is_set():
                rows = 1 + i % 5
                try:
                    r = c.post("/v1/predict", json=encode_binary(x[i % 200:i % 200 + rows]))
                except httpx.TransportError:
                    return  # the server died mid-request: not acknowledged
                if r.status_code == 200:
                    with lock:
                        acked.append((int(r.headers["x-gibbon-request"]), rows))
                i += 1

    threads = [threading.Thread(target=client, args=(k * 37,)) for k in range(4)]
    for t in threads:
        t.start()
    while len(acked) < 60:
        threading.Event().wait(0.01)
    server.kill()  # SIGKILL with requests in flight
    stop.set()
    for t in threads:
        t.join(timeout=20)

    lines = [json.loads(line) for p in (server.log_dir / "queries").glob("*.jsonl") for line in p.read_text().splitlines()
             if line.strip()]
    logged = {rec["seq"]: rec["rows"] for rec in lines if len(rec["labels"]) == rec["rows"]}
    assert len(logged) == len(lines)
    missing = [(seq, rows) for seq, rows in acked if logged.get(seq) != rows]
    assert not missing, f"{len(missing)} acknowledged requests are not in the log: {missing[:5]}"
    assert sorted(logged) == list(range(1, len(logged) + 1))

    server.start()
    used = httpx.get(f"{server.url}/v1/usage", headers=auth("user")).json()["queries"]
    assert used == sum(logged.values()) >= sum(rows for _, rows in acked)
    assert predict(server.url, "user", x[:2]).headers["x-gibbon-request"] == str(len(logged) + 1)
    server.stop()
