"""Flood of refused 8 MiB requests against ``gibbon serve``: the server's peak memory must stay flat.

Starts ``gibbon serve`` (the digits LeNet-5 trained here in seconds; ``--max-body-bytes`` 8 MiB,
the default) and sends ``--requests`` POSTs of a real 8 MiB JSON body from ``--concurrency``
clients at once, in three kinds, interleaved: a wrong token (401; the failed-login throttle is set
out of the way so every one reaches the token lookup), a token whose budget is spent (403) and a
token over its rate (429). Reads the server's peak resident memory (``VmHWM`` in
``/proc/PID/status``) before and after. Target (issue 23): peak under 300 MiB, the server still
answering. Run the code of another checkout's server with ``PYTHONPATH=OTHER/src``.

    .venv/bin/python benchmarks/serve_flood.py --requests 1000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import RESULTS, start_server, stop_server  # noqa: E402


def peak_rss_mib(pid: int) -> dict:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {k: round(int(fields[k].split()[0]) / 1024, 1) for k in ("VmHWM", "VmRSS")}


def train_model(path: Path) -> Path:
    import torch

    from gibbon import data, zoo

    digits = data.load("digits", "train")
    torch.manual_seed(0)
    net = zoo.build("lenet5", digits)
    zoo.fit(net, digits, epochs=2, batch_size=64, lr=3e-3, progress=False)
    return zoo.save(net.eval(), path, dataset=digits)


async def flood(url: str, kinds: list[tuple[str, str]], body: bytes, concurrency: int) -> tuple[dict, list, float]:
    import httpx

    codes: collections.Counter = collections.Counter()
    transport_errors: list[str] = []
    queue = asyncio.Queue()
    for item in kinds:
        queue.put_nowait(item)

    async def worker():
        async with httpx.AsyncClient(timeout=60) as client:
            while not queue.empty():
                kind, token = queue.get_nowait()
                try:
                    r = await client.post(f"{url}/v1/predict", content=body, headers={
                        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                    codes[f"{kind}:{r.status_code}"] += 1
                except httpx.TransportError as err:  # the server may close while the refused body is still sent
                    codes[f"{kind}:closed"] += 1
                    transport_errors.append(type(err).__name__)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return dict(codes), transport_errors, time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--body-mib", type=float, default=8.0)
    ap.add_argument("--out", default=str(RESULTS / "serve_flood.json"))
    args = ap.parse_args(argv)
    import httpx

    good, spent, slow = (secrets.token_urlsafe(24) for _ in range(3))
    entries = [{"token": good, "name": "good", "budget": None, "rate": 1000.0, "burst": 1000},
               {"token": spent, "name": "spent", "budget": 1, "rate": 1000.0, "burst": 1000},
               {"token": slow, "name": "slow", "budget": None, "rate": 0.001, "burst": 1}]
    # a real JSON body of the announced size: one 8x8 image, then padding numbers up to the size
    size = int(args.body_mib * 1024 * 1024) - 64
    body = (b'{"inputs": [[[' + b",".join([b"[0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5]"] * 8) + b"]]], \"pad\": \"")
    body += b"x" * (size - len(body) - 2) + b'"}'
    kinds = [("wrong-token", "not-a-token-" + "0" * 20), ("budget-spent", spent), ("rate-limited", slow)]
    plan = [kinds[i % 3] for i in range(args.requests)]
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = train_model(Path(tmp) / "lenet5-digits.safetensors")
        log_dir = Path(tmp) / "logs"
        proc, url = start_server(model, entries, log_dir, RESULTS / "serve_flood.server.log",
                                 "--auth-failures", "1000000000", "--max-body-bytes", str(8 * 1024 * 1024))
        try:
            one = {"inputs": [[[[0.5] * 8] * 8]]}
            for token in (spent, slow):  # spend the budget of one, the burst of the other
                assert httpx.post(f"{url}/v1/predict", json=one, headers={"Authorization": f"Bearer {token}"}
                                  ).status_code == 200
            before = peak_rss_mib(proc.pid)
            codes, transport, wall = asyncio.run(flood(url, plan, body, args.concurrency))
            after = peak_rss_mib(proc.pid)
            still = httpx.post(f"{url}/v1/predict", json=one, headers={"Authorization": f"Bearer {good}"}).status_code
        finally:
            stop_server(proc)
    result = {"requests": args.requests, "concurrency": args.concurrency, "body_mib": args.body_mib,
              "answers": codes, "transport_errors": len(transport), "wall_s": round(wall, 2),
              "server_rss_mib_before": before, "server_rss_mib_after": after, "still_serving_status": still,
              "pythonpath": os.environ.get("PYTHONPATH", "")}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = after["VmHWM"] < 300 and still == 200 and not any(k.endswith(":200") or ":5" in k for k in codes)
    print("OK: peak RSS under 300 MiB, no refused request answered, still serving" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
