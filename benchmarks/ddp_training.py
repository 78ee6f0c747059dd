"""PGD adversarial training in one process against 2 DDP processes (torchrun, gloo) with the same global batch.

Setting: ``gibbon train --arch madry-cnn --dataset mnist --n-train N --epochs E --batch-size 128
--defense pgd:eps=0.1,steps=7,step_size=0.03 --seed 0``. ``one``: one process, torch on 2
threads. ``ddp-2``: ``torchrun --standalone --nproc_per_node 2``, one thread each, each
process taking half of every global batch of 128. Repeats interleaved (shuffled order),
medians; every run trains from scratch into its own folder.

Reported per run: wall time of the command (start-up included), the training time (sum of the
card's epoch seconds), clean accuracy on the 10,000 test images (the card's) and PGD-20 robust
accuracy at eps 0.1 on the first 1,000 test images. Then the kill test: a ``ddp-2`` run is
SIGKILLed (the launcher and every worker, which torchrun starts in sessions of their own) once
the epoch-1 checkpoint is on disk, and started again; it must resume from the checkpoint
(epoch 2 alone is trained) and end with the uninterrupted ``ddp-2`` weights.

Rerun: ``.venv/bin/python benchmarks/ddp_training.py --n 10000 --epochs 2 --repeats 2 --json
benchmarks/results/ddp_training.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DEFENSE = "pgd:eps=0.1,steps=7,step_size=0.03"


def train_command(kind: str, out: Path, n: int, epochs: int) -> tuple[list[str], dict]:
    # --n-train, not --n: torchrun's own parser reads "--n" as an ambiguous prefix of its options
    args = ["-m", "gibbon.cli", "train", "--arch", "madry-cnn", "--dataset", "mnist", "--n-train", str(n), "--epochs",
            str(epochs), "--batch-size", "128", "--defense", DEFENSE, "--seed", "0", "--out", str(out)]
    if kind == "one":
        return [sys.executable, *args], {**os.environ, "OMP_NUM_THREADS": "2"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    return [*launcher, *args], {**os.environ, "OMP_NUM_THREADS": "1"}


def robust_accuracy(path: Path, n: int = 1000) -> float:
    from gibbon import data, zoo
    from gibbon.evaluation import evaluate

    report = evaluate(zoo.load(path), data.load("mnist", "test", n=n), ["pgd:steps=20,step_size=0.01"], [0.1],
                      progress=False)
    return report.results[0].robust_accuracy


def train_once(kind: str, out: Path, n: int, epochs: int) -> dict:
    command, env = train_command(kind, out, n, epochs)
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed: {done.stderr[-2000:]}")
    card = json.loads(out.with_suffix(".json").read_text())
    return {"wall_s": wall, "train_s": sum(e["seconds"] for e in card["history"]),
            "clean_accuracy": card["clean_test_accuracy"], "robust_accuracy": robust_accuracy(out),
            "history": card["history"]}


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and all its descendants, as a machine crash would, and wait until none is left.

    Not ``os.killpg`` alone: torchrun starts each worker in a session of its own
    (``start_new_session``), so killing the launcher's process group leaves the workers
    training, and writing the checkpoint the rerun resumes from."""
    victims = [pid, *descendants(pid)]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while any(_alive(v) for v in victims[1:]):
        if time.monotonic() > deadline:
            raise SystemExit(f"processes {victims} outlived SIGKILL for 30 s")
        time.sleep(0.1)
    return victims


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (dead, waiting for its parent to reap it)."""
    try:
        return (Path(f"/proc/{pid}") / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False  # gone


def kill_and_resume(workdir: Path, n: int, epochs: int, reference: Path, log) -> dict:
    out = workdir / "killed.safetensors"
    command, env = train_command("ddp-2", out, n, epochs)
    ckpt = out.with_name(out.stem + ".ckpt") / "checkpoint.pt"
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while proc.poll() is None and not ckpt.exists():
        time.sleep(0.1)
    time.sleep(1.0)  # into epoch 2
    victims = kill_tree(proc.pid)
    proc.wait()
    log(f"  SIGKILLed the launcher and its {len(victims) - 1} descendants at once")
    killed_after = time.perf_counter() - t0
    saved_epoch = int(torch.load(ckpt, weights_only=True)["epoch"])
    log(f"  killed after {killed_after:.1f} s, checkpoint at epoch {saved_epoch}")
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    rerun = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"the resumed run failed: {done.stderr[-2000:]}")
    a, b = load_file(out), load_file(reference)
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    history = json.loads(out.with_suffix(".json").read_text())["history"]
    log(f"  resumed run {rerun:.1f} s (its epoch 2: {history[-1]['seconds']:.1f} s); largest weight gap to the "
        f"uninterrupted ddp-2 run {gap:.2e}")
    return {"killed_after_s": killed_after, "checkpoint_epoch": saved_epoch, "rerun_s": rerun,
            "max_weight_gap": gap, "epochs_in_history": [e["epoch"] for e in history],
            "resumed_epoch_seconds": history[-1]["seconds"], "killed_processes": len(victims)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    log = print
    common.set_threads(2)
    workdir = Path(tempfile.mkdtemp(prefix="ddp-"))
    runs: dict[str, list[dict]] = {"one": [], "ddp-2": []}
    for r, kind in common.shuffled_rounds(runs, args.repeats, args.seed):
        got = train_once(kind, workdir / f"{kind}-{r}.safetensors", args.n, args.epochs)
        runs[kind].append(got)
        log(f"  repeat {r + 1}/{args.repeats} {kind:<6s} wall {got['wall_s']:7.1f} s  train {got['train_s']:7.1f} s  "
            f"clean {got['clean_accuracy']:.4f}  PGD-20 {got['robust_accuracy']:.3f}")
    med = {kind: {key: statistics.median(run[key] for run in rs) for key in ("wall_s", "train_s")}
           for kind, rs in runs.items()}
    ratio = med["ddp-2"]["train_s"] / med["one"]["train_s"]
    log(f"training time ddp-2 / one: {ratio:.3f}; wall {med['ddp-2']['wall_s'] / med['one']['wall_s']:.3f}")
    log("kill and resume (ddp-2):")
    killed = kill_and_resume(workdir, args.n, args.epochs, workdir / "ddp-2-0.safetensors", log)
    result = {"settings": {"arch": "madry-cnn", "n_train": args.n, "epochs": args.epochs, "batch_size": 128,
                           "defense": DEFENSE, "one_threads": 2, "ddp_threads_per_process": 1},
              "machine": common.machine_info(), "runs": runs, "medians": med, "ddp_over_one_train_time": ratio,
              "kill_and_resume": killed}
    common.write_result(args.json, result, log)


if __name__ == "__main__":
    main()
