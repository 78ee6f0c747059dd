"""A 4-model x 3-attack x 3-eps grid on 2 local Ray workers against the same grid in one process.

Models (the zoo's MNIST cache, trained first if missing, untimed): Madry et al.'s CNN, LeNet-5,
Tramer et al.'s model B and the MLP 200-200, 2 epochs each, seed 0. Attacks: the main job's FGSM,
BIM (early stop) and PGD-40 (random start, early stop) at L-inf eps 0.1, 0.2, 0.3 on the first
``--n`` MNIST test images, batch 250.

Contenders, interleaved (shuffled order per repeat), medians of ``--repeats``:
* ``sequential``: ``run_experiment`` in this process, torch on 2 threads (the default run).
* ``ray-2``: the same experiment with ``RayExecutor(workers=2)``, one torch thread per task,
  one shard = one batch. Ray is started once, before the repeats; its start-up is timed apart.

Every run writes to a fresh folder, so nothing is resumed; the script checks that every Ray
report equals the sequential one (per (model, attack, eps) robust accuracy and worst case).
Then the kill test: ``gibbon run --ray --workers 2`` in a subprocess, SIGKILLed once half of its
shards are on disk, and run again: the rerun must load every saved shard (files untouched),
compute only the others, and give the sequential numbers.

Rerun: ``.venv/bin/python benchmarks/ray_grid.py --n 1000 --repeats 3 --json
benchmarks/results/ray_grid.json``.
"""

from __future__ import annotations

import argparse
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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODELS = [("madry-cnn", 2), ("lenet5", 2), ("tramer-b", 2), ("mlp-200-200", 2)]
ATTACKS = ["fgsm", "bim:early_stop=true", "pgd:steps=40,step_size=0.01,random_start=true,early_stop=true"]
EPS = [0.1, 0.2, 0.3]


def experiment_config(n: int, output: Path) -> dict:
    return {"name": "ray-grid", "seed": 0, "data": {"dataset": "mnist", "split": "test", "n": n},
            "models": [{"name": arch, "zoo": {"arch": arch, "dataset": "mnist", "epochs": epochs}}
                       for arch, epochs in MODELS],
            "attacks": ATTACKS, "eps": EPS, "norm": "linf", "batch_size": 250, "output": str(output)}


def busy_cores_during(fn):
    """(result, wall seconds, cores busy on the whole machine) of ``fn()``."""
    b0, t0 = common._cpu_jiffies()
    start = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    b1, t1 = common._cpu_jiffies()
    return out, wall, (b1 - b0) / max(1, t1 - t0) * (os.cpu_count() or 1)


def numbers(summary: dict) -> dict:
    return {name: {k: m[k] for k in ("clean_accuracy", "robust_accuracy", "worst_case")}
            for name, m in summary["models"].items()}


def kill_and_resume(config: dict, workdir: Path, log) -> dict:
    """SIGKILL a `gibbon run --ray` once half its shards are saved; rerun; what was loaded and recomputed."""
    path = workdir / "kill.yaml"
    path.write_text(yaml.safe_dump({**config, "output": str(workdir / "kill-out")}))
    shards = workdir / "kill-out" / "checkpoints"
    total = None
    command = [sys.executable, "-m", "gibbon.cli", "run", str(path), "--ray", "--workers", "2"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # 4 models x (3 attacks x 3 eps) x ceil(n / 250) shards; kill at half
    total = len(MODELS) * len(ATTACKS) * len(EPS) * -(-config["data"]["n"] // 250)
    while proc.poll() is None and len(list(shards.glob("*.shards/*.json"))) < total // 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_after = time.perf_counter() - t0
    before = {str(p): p.stat().st_mtime_ns for p in shards.glob("*.shards/*.json")}
    log(f"  killed after {killed_after:.1f} s with {len(before)} of {total} shards saved")
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    rerun = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"the resumed run failed: {done.stderr[-2000:]}")
    summary = json.loads((workdir / "kill-out" / "summary.json").read_text())
    stats = [m["shards"] for m in summary["models"].values()]
    untouched = all(Path(p).stat().st_mtime_ns == t for p, t in before.items())
    log(f"  rerun {rerun:.1f} s: {sum(s['resumed'] for s in stats)} shards resumed, "
        f"{sum(s['computed'] for s in stats)} computed; saved files untouched: {untouched}")
    return {"total_shards": total, "saved_before_kill": len(before), "killed_after_s": killed_after,
            "rerun_s": rerun, "resumed": sum(s["resumed"] for s in stats),
            "computed": sum(s["computed"] for s in stats), "saved_files_untouched": untouched,
            "summary": numbers(summary)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    log = print

    from gibbon.evaluation import RayExecutor
    from gibbon.experiments import run_experiment
    from gibbon.experiments.config import Experiment
    from gibbon.experiments.runner import load_model

    workdir = Path(tempfile.mkdtemp(prefix="ray-grid-"))
    config = experiment_config(args.n, workdir / "unused")
    log("training / loading the models (untimed) ...")
    for spec in Experiment.model_validate(config).models:
        load_model(spec, "cpu")

    t0 = time.perf_counter()
    executor = RayExecutor(workers=2).__enter__()
    ray_start = time.perf_counter() - t0
    log(f"local Ray with 2 CPUs started in {ray_start:.1f} s")

    def contender(name):
        def go(r):
            experiment = Experiment.model_validate({**config, "output": str(workdir / f"{name}-{r}")})
            if name == "sequential":
                common.set_threads(2)
                return run_experiment(experiment, progress=False, echo=lambda *_: None)
            return run_experiment(experiment, progress=False, echo=lambda *_: None, executor=executor)
        return go

    runs = {"sequential": [], "ray-2": []}
    reference = None
    for r, name in common.shuffled_rounds(runs, args.repeats, args.seed):
        torch.manual_seed(args.seed)
        summary, wall, busy = busy_cores_during(lambda: contender(name)(r))
        got = numbers(summary)
        if name == "sequential":
            reference = reference or got
        runs[name].append({"seconds": wall, "busy_cores": busy, "numbers": got})
        log(f"  repeat {r + 1}/{args.repeats} {name:<11s} {wall:8.1f} s  machine busy {busy:4.2f} cores")
    executor.__exit__(None, None, None)

    identical = all(run["numbers"] == reference for rs in runs.values() for run in rs)
    med = {name: statistics.median(run["seconds"] for run in rs) for name, rs in runs.items()}
    paired = [s["seconds"] / q["seconds"] for s, q in zip(runs["ray-2"], runs["sequential"])]
    log(f"identical numbers in every run: {identical}")
    log(f"median s: sequential {med['sequential']:.1f}, ray-2 {med['ray-2']:.1f}; ray / sequential "
        f"{med['ray-2'] / med['sequential']:.3f} (paired median {statistics.median(paired):.3f})")
    log("kill and resume:")
    killed = kill_and_resume(config, workdir, log)
    killed["equals_sequential"] = killed.pop("summary") == reference
    log(f"  resumed numbers equal the sequential run's: {killed['equals_sequential']}")
    result = {"settings": {"n": args.n, "repeats": args.repeats, "models": MODELS, "attacks": ATTACKS, "eps": EPS,
                           "batch_size": 250, "sequential_threads": 2, "ray_workers": 2, "threads_per_task": 1},
              "machine": common.machine_info(), "ray_start_s": ray_start, "runs": runs, "median_s": med,
              "ray_over_sequential": med["ray-2"] / med["sequential"], "paired_ratios": paired,
              "identical": identical, "kill_and_resume": killed, "reference": reference}
    common.write_result(args.json, result, log)


if __name__ == "__main__":
    main()
