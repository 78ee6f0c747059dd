"""Load test of ``gibbon serve`` on loopback: N concurrent clients x M requests, zero errors required.

Serves the cached MNIST LeNet-5 (``zoo.trained("lenet5", "mnist", epochs=5)``) with ``gibbon serve``
in a subprocess (one uvicorn worker, 1 torch thread, a fresh log dir: every request fsync'd,
PRADA on), gives every client its own token (budget and rate well above the test), and runs the
clients as asyncio tasks, each with its own ``httpx.AsyncClient`` connection, sending one MNIST
test image per request in the binary form. Any non-200 answer or transport error is an error.
Prints and saves p50/p99 latency and throughput to ``benchmarks/results/serve_load.json``;
the server's output goes to ``benchmarks/results/serve_load.server.log``.

    mkdir -p benchmarks/results && OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_load.py --clients 50 --requests 200 \\
        | tee benchmarks/results/serve_load.log

Clients and server share the machine's cores, so the numbers are a floor for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path, tokens: list[dict], log_dir: Path, out_path: Path, *extra: str, timeout: float = 120):
    """``gibbon serve`` in a subprocess on a free port; returns ``(process, url)`` once /healthz answers."""
    import httpx

    tokens_file = log_dir.parent / "tokens.json"
    tokens_file.write_text(json.dumps({"tokens": tokens}))
    os.chmod(tokens_file, 0o600)
    port = free_port()
    out = open(out_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "gibbon.cli", "serve", "--model", str(model_path), "--port",
                             str(port), "--tokens-file", str(tokens_file), "--log-dir", str(log_dir), *extra],
                            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    out.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}); see {out_path}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start in {timeout}s; see {out_path}")


def stop_server(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def client(url: str, token: str, bodies: list[bytes], latencies: list[float], errors: list[str]) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as c:
        for body in bodies:
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/predict", content=body)
            except httpx.HTTPError as e:
                errors.append(f"{type(e).__name__}: {e}")
                continue
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:100]}")


async def run_load(url, tokens, bodies_per_client, deadline_s: float):
    latencies, errors = [], []
    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*[client(url, tok, bodies, latencies, errors)
                                            for tok, bodies in zip(tokens, bodies_per_client)]), deadline_s)
    return latencies, errors, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=200, help="requests per client")
    ap.add_argument("--rows", type=int, default=1, help="images per request")
    ap.add_argument("--deadline", type=float, default=600.0, help="seconds before the run is abandoned")
    ap.add_argument("--out", default=str(RESULTS / "serve_load.json"))
    args = ap.parse_args(argv)

    import httpx
    import torch

    from gibbon import data, zoo
    from gibbon.serve.payload import encode_binary

    torch.set_num_threads(1)
    model_path = zoo.trained("lenet5", "mnist", epochs=5, progress=False)
    test = data.load("mnist", "test")
    tokens = [secrets.token_urlsafe(24) for _ in range(args.clients)]
    entries = [{"token": t, "name": f"load-{i}", "budget": 10 * args.requests * args.rows, "rate": 100_000.0,
                "burst": 10_000} for i, t in enumerate(tokens)]
    admin = secrets.token_urlsafe(24)
    entries.append({"token": admin, "name": "admin", "admin": True, "budget": None, "rate": 1000.0, "burst": 100})
    bodies = [[json.dumps(encode_binary(test.x[(c * args.requests + r) * args.rows % 9000:][:args.rows])).encode()
               for r in range(args.requests)] for c in range(args.clients)]
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp) / "logs"
        proc, url = start_server(model_path, entries, log_dir, RESULTS / "serve_load.server.log")
        try:
            cpu0 = cpu_seconds(proc.pid)
            latencies, errors, wall = asyncio.run(run_load(url, tokens, bodies, args.deadline))
            cpu1 = cpu_seconds(proc.pid)
            view = httpx.get(f"{url}/v1/admin/alerts", headers={"Authorization": f"Bearer {admin}"}).json()
        finally:
            stop_server(proc)
        logged = sum(len(p.read_text().splitlines()) for p in (log_dir / "queries").glob("*.jsonl"))
    n = args.clients * args.requests
    counted = sum(t["queries"] for t in view["tokens"] if t["name"] != "admin")
    result = {
        "clients": args.clients, "requests_per_client": args.requests, "rows_per_request": args.rows,
        "requests": n, "answered": len(latencies), "errors": len(errors), "error_samples": errors[:5],
        "wall_s": round(wall, 3), "throughput_rps": round(n / wall, 1), "throughput_qps": round(n * args.rows / wall, 1),
        "latency_ms": {"p50": round(1000 * statistics.median(latencies), 2),
                       "p90": round(1000 * percentile(latencies, 90), 2),
                       "p99": round(1000 * percentile(latencies, 99), 2), "max": round(1000 * max(latencies), 2)},
        "server_cpu_ms_per_request": None if cpu0 is None else round(1000 * (cpu1 - cpu0) / n, 2),
        "load_average_1min_after": round(os.getloadavg()[0], 2),
        "server_counted_queries": counted, "log_lines": logged,
        "prada_flagged_tokens": sum(t["flagged"] for t in view["tokens"]),
        "setup": {"model": "lenet5 mnist (zoo.trained epochs=5)", "server": "gibbon serve, 1 uvicorn worker, "
                  "--threads 1, fsync per request, PRADA on", "client": "asyncio + httpx.AsyncClient, one "
                  "connection per client", "host": "127.0.0.1", "cpus": os.cpu_count(),
                  "python": platform.python_version(), "torch": torch.__version__},
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = not errors and counted == n * args.rows and logged == n
    print("OK: zero errors, every query counted and logged" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
