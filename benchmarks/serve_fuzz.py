"""Schemathesis against ``gibbon serve``: every route of the published OpenAPI schema fuzzed, no 5xx.

Starts the server (the digits LeNet-5 of ``serve_flood.py``, an unlimited token) and runs
``schemathesis run URL/openapi.json`` with the token, the ``not_a_server_error`` check and
``--max-examples`` per operation (positive and negative generation: valid and broken bodies).
Needs the ``fuzz`` extra (``pip install -e '.[fuzz]'``). The default test run has its own
hypothesis fuzz in ``tests/serve/test_serve_fuzz.py``; this one reads the schema as a client would.

    .venv/bin/python benchmarks/serve_fuzz.py --max-examples 100
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_flood import train_model  # noqa: E402
from serve_load import RESULTS, start_server, stop_server  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-examples", type=int, default=100)
    args = ap.parse_args(argv)
    exe = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(exe).exists():
        print("schemathesis is not installed: pip install -e '.[fuzz]'")
        return 2
    token = secrets.token_urlsafe(24)
    entries = [{"token": token, "name": "fuzz", "budget": None, "rate": 100_000.0, "burst": 100_000, "admin": True}]
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = train_model(Path(tmp) / "lenet5-digits.safetensors")
        proc, url = start_server(model, entries, Path(tmp) / "logs", RESULTS / "serve_fuzz.server.log")
        try:
            run = subprocess.run([exe, "run", f"{url}/openapi.json", "-H", f"Authorization: Bearer {token}",
                                  "--checks", "not_a_server_error", "--max-examples", str(args.max_examples),
                                  "--report", "ndjson", "--report-dir", str(Path(tmp) / "report")],
                                 capture_output=True, text=True)
        finally:
            stop_server(proc)
        server_log = (RESULTS / "serve_fuzz.server.log").read_text()
    print(run.stdout[-4000:], run.stderr[-2000:])
    tracebacks = server_log.count("Traceback")
    result = {"max_examples": args.max_examples, "schemathesis_exit": run.returncode,
              "server_tracebacks_logged": tracebacks, "summary": run.stdout.strip().splitlines()[-1:]}
    (RESULTS / "serve_fuzz.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
