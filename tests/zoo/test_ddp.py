"""Data-parallel adversarial training under torchrun (gloo, 2 CPU processes): the one-process weights for
the same global batch, per-rank RNG states in the checkpoint, resume under DDP, and rank 0 alone writing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gibbon.core.checks import GibbonInputError

ARGS = ["--arch", "mlp-200-200", "--dataset", "digits", "--batch-size", "64"]
# no random start: the inner attack is deterministic, so 2 processes must give the one-process weights
FIXED = "pgd:eps=0.1,steps=5,step_size=0.03,random_start=false"
RANDOM = "pgd:eps=0.1,steps=5,step_size=0.03"


def _train(tmp_path: Path, out: str, *, epochs: int, defense: str, processes: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*(launcher if processes > 1 else [sys.executable]), "-m", "gibbon.cli", "train", *ARGS,
               "--epochs", str(epochs), "--defense", defense, "--out", str(tmp_path / out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _max_gap(a: Path, b: Path) -> float:
    wa, wb = load_file(a), load_file(b)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def test_two_processes_train_the_one_process_weights(tmp_path):
    _train(tmp_path, "one.safetensors", epochs=2, defense=FIXED, processes=1)
    two = _train(tmp_path, "two.safetensors", epochs=2, defense=FIXED, processes=2)
    # measured 2.3e-6 (float summation order); without the gradient all-reduce the ranks' halves
    # would train apart (each rank sees half the data): gaps of 1e-2 and more
    assert _max_gap(tmp_path / "one.safetensors", tmp_path / "two.safetensors") < 1e-4
    card = json.loads((tmp_path / "two.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert card["processes"] == 2 and "processes" not in one
    assert abs(card["clean_test_accuracy"] - one["clean_test_accuracy"]) <= 0.005
    assert [e["train_loss"] for e in card["history"]] == pytest.approx([e["train_loss"] for e in one["history"]],
                                                                      rel=1e-4)  # summed over both ranks
    assert two.stdout.count("saved ") == 1  # rank 0 alone writes and prints


def test_resume_under_ddp_gives_the_uninterrupted_weights(tmp_path):
    """A run stopped after epoch 1 and restarted for 2 epochs loads the checkpoint (model, optimizer and each
    rank's RNG: the random starts go on where they were) and ends where an uninterrupted run ends."""
    _train(tmp_path, "straight.safetensors", epochs=2, defense=RANDOM, processes=2)
    _train(tmp_path, "resumed.safetensors", epochs=1, defense=RANDOM, processes=2)
    ckpt = torch.load(tmp_path / "resumed.ckpt" / "checkpoint.pt", weights_only=True)
    assert len(ckpt["cpu_rng_ranks"]) == 2 and not torch.equal(ckpt["cpu_rng_ranks"][0]["cpu"],
                                                               ckpt["cpu_rng_ranks"][1]["cpu"])
    _train(tmp_path, "resumed.safetensors", epochs=2, defense=RANDOM, processes=2)
    assert _max_gap(tmp_path / "straight.safetensors", tmp_path / "resumed.safetensors") < 1e-6
    history = json.loads((tmp_path / "resumed.json").read_text())["history"]
    assert [e["epoch"] for e in history] == [1, 2]
    # a one-process run must not take over the 2-process checkpoint: its ranks' RNG streams differ
    command = [sys.executable, "-m", "gibbon.cli", "train", *ARGS, "--epochs", "3", "--defense", RANDOM,
               "--out", str(tmp_path / "resumed.safetensors")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "number of processes" in done.stderr and "Traceback" not in done.stderr


def test_helpers_are_identities_in_one_process():
    from gibbon.zoo import distributed

    assert distributed.rank_and_world() == (0, 1) and distributed.is_main()
    assert distributed.sum_across([1.5, 2.0], "cpu") == [1.5, 2.0] and distributed.gather("x") == ["x"]
    assert distributed.init_from_env("cpu") == "cpu"  # not under torchrun: nothing to join


def test_batch_smaller_than_the_processes_is_an_error(monkeypatch):
    from gibbon import data, zoo
    from gibbon.zoo import training

    monkeypatch.setattr(training, "rank_and_world", lambda: (0, 4))
    train = data.load("digits", "train", n=32)
    with pytest.raises(GibbonInputError, match="cannot be split over 4 processes"):
        zoo.fit(zoo.build("mlp-200-200", train), train, batch_size=2, progress=False)
