"""Fixtures: a small CNN trained here, a tokens file, and the real server started in a subprocess on a
free 127.0.0.1 port (waits for /healthz; always stopped or killed afterwards)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _serve import TOKENS, ServerProcess

from gibbon import data, zoo


@pytest.fixture(scope="session")
def digits_sets():
    return data.load("digits", "train"), data.load("digits", "test")


@pytest.fixture(scope="session")
def model_path(tmp_path_factory, digits_sets):
    """LeNet-5 trained 10 epochs on the digits train split (measured 99% test accuracy, about 3 s)."""
    train, _ = digits_sets
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = zoo.build("lenet5", train)
        zoo.fit(net, train, epochs=10, batch_size=64, lr=3e-3, progress=False)
    torch.set_num_threads(threads)
    return zoo.save(net.eval(), tmp_path_factory.mktemp("model") / "lenet5-digits.safetensors", dataset=train)


@pytest.fixture(scope="session")
def local_model(model_path):
    return zoo.load(model_path).eval()


@pytest.fixture(scope="session")
def tokens_file(tmp_path_factory):
    entries = [{"token": token, "name": name, **limits} for name, (token, limits) in TOKENS.items()]
    path = tmp_path_factory.mktemp("tokens") / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}))
    return path


@pytest.fixture(scope="session")
def server(model_path, tokens_file, tmp_path_factory):
    """One server for the API, oracle and fuzz tests (their tokens do not overlap)."""
    proc = ServerProcess(model_path, tokens_file, tmp_path_factory.mktemp("serve") / "logs").start()
    yield proc
    proc.stop()
    proc.kill()


@pytest.fixture
def make_server(model_path, tokens_file, tmp_path):
    """``make_server(*extra_args)``: a server of the test's own (its log dir under tmp_path), always ended."""
    started = []

    def make(*extra: str, log_dir: Path | None = None) -> ServerProcess:
        proc = ServerProcess(model_path, tokens_file, log_dir or tmp_path / "logs", *extra)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.kill()
