"""The real server in a subprocess (``ServerProcess``) and the test tokens; imported as ``from _serve import ...``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKENS = {  # name -> (token, limits)
    "user": ("user-token-aaaaaaaaaaaa", {"budget": 1_000_000, "rate": 100_000.0, "burst": 5000}),
    "small": ("small-budget-token-bbbb", {"budget": 10, "rate": 100_000.0, "burst": 5000}),
    "client-budget": ("client-budget-token-cc", {"budget": 10, "rate": 100_000.0, "burst": 5000}),
    "slow": ("slow-rate-token-dddddddd", {"budget": 1000, "rate": 1.0, "burst": 2}),
    "slow2": ("slow-rate-token-eeeeeeee", {"budget": 1000, "rate": 2.0, "burst": 2}),
    "attacker": ("attacker-token-ffffffff", {"budget": 1_000_000, "rate": 100_000.0, "burst": 5000}),
    "benign": ("benign-token-gggggggggg", {"budget": 1_000_000, "rate": 100_000.0, "burst": 5000}),
    "fuzz": ("fuzz-token-hhhhhhhhhhhh", {"budget": None, "rate": 100_000.0, "burst": 5000}),
    "retry": ("retry-token-jjjjjjjjjjjj", {"budget": 100, "rate": 100_000.0, "burst": 5000}),
    "shared": ("shared-budget-token-kkkk", {"budget": 300, "rate": 100_000.0, "burst": 5000}),
    "shared-sub": ("shared-sub-token-llllllll", {"budget": 200, "rate": 100_000.0, "burst": 5000}),
    "shared-nes": ("shared-nes-token-mmmmmmmm", {"budget": 6000, "rate": 100_000.0, "burst": 5000}),
    "shared-square": ("shared-square-token-nnnnnn", {"budget": 1500, "rate": 100_000.0, "burst": 5000}),
    "mia-small": ("mia-small-budget-token-oo", {"budget": 10, "rate": 100_000.0, "burst": 5000}),
    "steal": ("steal-token-pppppppppppp", {"budget": 1_000_000, "rate": 100_000.0, "burst": 5000}),
    "steal-small": ("steal-small-token-qqqqqqq", {"budget": 40, "rate": 100_000.0, "burst": 5000}),
    "admin": ("admin-token-iiiiiiiiiii", {"budget": None, "rate": 100_000.0, "burst": 5000, "admin": True}),
}
MAX_BATCH, MAX_BODY = 64, 200_000


def auth(name: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``gibbon serve`` in a subprocess; ``url``, ``log_dir``, ``stop()``, ``kill()``, ``output()``."""

    def __init__(self, model_path: Path, tokens_file: Path, log_dir: Path, *extra: str):
        self.args = [sys.executable, "-m", "gibbon.cli", "serve", "--model", str(model_path), "--tokens-file",
                     str(tokens_file), "--log-dir", str(log_dir), "--max-batch", str(MAX_BATCH),
                     "--max-body-bytes", str(MAX_BODY), *extra]
        self.log_dir, self.proc, self.starts = Path(log_dir), None, 0
        self.out_path = self.log_dir.parent / f"{self.log_dir.name}-server.log"

    def start(self, timeout: float = 60.0) -> "ServerProcess":
        for _ in range(3):  # a free port can be taken between the probe and the bind: try another
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            env.pop("GIBBON_TOKENS", None)
            out = open(self.out_path, "a")
            self.proc = subprocess.Popen([*self.args, "--port", str(self.port)], stdout=out, stderr=subprocess.STDOUT,
                                         env=env)
            out.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                        self.starts += 1
                        return self
                except httpx.TransportError:
                    time.sleep(0.1)
            if self.proc.poll() is None:
                self.kill()
                raise RuntimeError(f"server did not answer /healthz in {timeout}s:\n{self.output()[-3000:]}")
            if "address already in use" not in self.output().lower():
                break
        raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.out_path.read_text() if self.out_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)
