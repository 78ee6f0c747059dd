"""Shared pieces of the benchmarks: data, models, the "floor" timer and an interleaved runner.

Conventions (see ``/work/shared/BENCHMARKING.md`` and ``benchmarks/README.md``):

* MNIST, the first ``n`` (1,000) test images, batches of 250, ``torch.set_num_threads(2)``.
* Models in eval mode. Their parameters keep ``requires_grad=True`` (what a user hands to an
  attack library) unless ``freeze=True``; libraries that call ``loss.backward()`` (ART, Foolbox)
  then also compute parameter gradients, which ``torch.autograd.grad`` w.r.t. the input skips.
* "Floor": ``steps`` plain forward + backward passes (cross-entropy, gradient w.r.t. the input
  only, ``torch.autograd.grad``) over the same batches -- the least work any gradient attack with
  that many steps must do.
* Contenders run interleaved: each repeat runs every contender once, in a freshly shuffled
  order (seeded), so slow bursts of the machine spread over all of them; we quote medians.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

THREADS = 2
BATCH_SIZE = 250


def set_threads(n: int = THREADS) -> None:
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (parallel work has run): harmless
        pass


# --------------------------------------------------------------------------- data


def mnist_test(n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` MNIST test images (float32 N x 1 x 28 x 28 in [0, 1]) and labels (int64)."""
    from gibbon import data

    ds = data.load("mnist", "test", n=n)
    return ds.x.contiguous(), ds.y.contiguous()


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int = BATCH_SIZE):
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size], y[i:i + batch_size]


# --------------------------------------------------------------------------- models


def _prepare(model: torch.nn.Module, freeze: bool) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(not freeze)
    return model


def madry_cnn(freeze: bool = False, progress: bool = False) -> torch.nn.Module:
    """The Madry et al. MNIST CNN, 2 epochs of Adam (gibbon's model cache; trained on first use)."""
    from gibbon import zoo

    path = zoo.trained("madry-cnn", "mnist", epochs=2, seed=0, progress=progress)
    return _prepare(zoo.load(path), freeze)


# Adversarial training of the small Wong et al. (2020) MNIST network (the "wong-net").
AT_CONFIG = {
    "arch": "wong-net",
    "dataset": "mnist",
    "method": "pgd-at",  # Madry et al. 2018: train on PGD examples only
    "eps": 0.3,
    "attack_steps": 10,
    "attack_step_size": 0.05,
    "random_start": True,
    "eps_ramp_epochs": 3,  # eps grows linearly from 0 over these epochs (without it: stuck at chance)
    "epochs": 8,
    "n_train": 50000,
    "batch_size": 100,
    "optimizer": "adam",
    "lr": 2e-3,
    "schedule": "cyclic",  # Wong, Rice & Kolter 2020: triangle 0 -> lr -> 0
    "seed": 0,
}


def _at_entry(config: dict) -> Path:
    from gibbon.zoo.cache import cache_root

    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / f"bench-{config['arch']}-{config['dataset']}-{config['method']}-{key}" / "model.safetensors"


def pgd_objective(eps: float, steps: int, step_size: float, seed: int = 0, ramp_batches: int = 0) -> Callable:
    """``objective(model, x, y) -> (loss, logits)`` for :func:`gibbon.zoo.fit`: mean
    cross-entropy on PGD examples (gibbon's ``pgd``, random start, one restart). With
    ``ramp_batches`` the budget (and step size) grow linearly from 0 to ``eps`` over that many
    batches: PGD training at eps 0.3 from scratch otherwise stays at chance accuracy."""
    from gibbon.attacks import pgd

    generator = torch.Generator().manual_seed(seed)  # one stream over the whole training run
    calls = [0]

    def pgd_at(model, x, y):
        calls[0] += 1
        frac = min(1.0, calls[0] / ramp_batches) if ramp_batches else 1.0
        x_adv = pgd(model, x, y, eps=eps * frac, steps=steps, step_size=step_size * frac, random_start=True,
                    generator=generator)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits

    return pgd_at


def adv_trained_wong_net(freeze: bool = False, progress: bool = True, config: dict | None = None) -> torch.nn.Module:
    """A PGD-adversarially-trained wong-net (eps 0.3), cached under gibbon's model cache."""
    from gibbon import data, zoo

    config = dict(AT_CONFIG if config is None else config)
    weights = _at_entry(config)
    if not (weights.exists() and weights.with_suffix(".json").exists()):
        weights.parent.mkdir(parents=True, exist_ok=True)
        train = data.load(config["dataset"], "train", n=config["n_train"])
        val = data.load(config["dataset"], "val", n=2000)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config["seed"])
            model = zoo.build(config["arch"], train)
        n_batches = -(-config["n_train"] // config["batch_size"])
        objective = pgd_objective(config["eps"], config["attack_steps"], config["attack_step_size"], config["seed"],
                                  ramp_batches=config["eps_ramp_epochs"] * n_batches)
        t0 = time.perf_counter()
        result = zoo.fit(model, train, epochs=config["epochs"], batch_size=config["batch_size"],
                         optimizer=config["optimizer"], lr=config["lr"], schedule=config["schedule"],
                         objective=objective, val=val, seed=config["seed"], progress=False,
                         callback=(lambda e, h: print(f"wong-net PGD-AT epoch {e}: {h}", flush=True)) if progress else None)
        test = data.load(config["dataset"], "test")
        card = {"training": config, "history": result.history, "clean_test_accuracy": zoo.accuracy(model, test),
                "train_seconds": time.perf_counter() - t0, "made_by": "benchmarks/common.py"}
        zoo.save(model, weights, card, dataset=train)
    return _prepare(zoo.load(weights), freeze)


def accuracy(model, x, y, batch_size: int = BATCH_SIZE) -> float:
    with torch.no_grad():
        correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in batches(x, y, batch_size))
    return correct / len(y)


def check_budget(x_adv: torch.Tensor, x: torch.Tensor, eps: float, bounds=(0.0, 1.0), tol: float = 1e-5) -> dict:
    """Largest L-inf perturbation and bound violation of ``x_adv``: every contender is scored only
    if it stayed in the eps-ball and the box."""
    linf = float((x_adv - x).abs().amax())
    outside = float(torch.clamp(bounds[0] - x_adv, min=0).amax().clamp_min(0).item()
                    + torch.clamp(x_adv - bounds[1], min=0).amax().item())
    return {"max_linf": linf, "ok": linf <= eps + tol and outside <= tol, "box_violation": outside}


# --------------------------------------------------------------------------- floor


def floor(model, x, y, steps: int, batch_size: int = BATCH_SIZE) -> None:
    """``steps`` forward + backward passes (gradient of the cross-entropy w.r.t. the input only)
    on each batch: the least work a ``steps``-step gradient attack must do."""
    for xb, yb in batches(x, y, batch_size):
        for _ in range(steps):
            xv = xb.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(model(xv), yb, reduction="sum")
                torch.autograd.grad(loss, xv)


# --------------------------------------------------------------------------- runner


@dataclass
class Contender:
    """One timed job. ``run()`` returns ``x_adv`` (a tensor over all images) or None (the floor)."""

    name: str
    run: Callable[[], torch.Tensor | None]
    meta: dict = field(default_factory=dict)


@dataclass
class Timing:
    name: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # this process's CPU time during the run
    loadavg: list[float] = field(default_factory=list)  # 1-minute load average after the run
    discarded_seconds: list[float] = field(default_factory=list)  # runs redone because contended
    robust_accuracy: list[float] = field(default_factory=list)
    max_linf: list[float] = field(default_factory=list)
    budget_ok: list[bool] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "seconds": self.seconds,
            "median_s": self.median,
            "min_s": min(self.seconds),
            "max_s": max(self.seconds),
            "cpu_seconds": self.cpu_seconds,
            "cpu_per_wall": [c / w for c, w in zip(self.cpu_seconds, self.seconds)],
            "loadavg": self.loadavg,
            "discarded_seconds": self.discarded_seconds,
            "robust_accuracy": self.robust_accuracy,
            "robust_accuracy_median": statistics.median(self.robust_accuracy) if self.robust_accuracy else None,
            "max_linf": max(self.max_linf) if self.max_linf else None,
            "budget_ok": all(self.budget_ok) if self.budget_ok else None,
            **self.meta,
        }


def _cpu_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        vals = [int(v) for v in fh.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals[:8]) - idle, sum(vals[:8])


def busy_cores(interval: float = 1.0) -> float:
    """CPU cores busy (all processes) over ``interval`` seconds while this process sleeps."""
    try:
        b0, t0 = _cpu_jiffies()
        time.sleep(interval)
        b1, t1 = _cpu_jiffies()
    except (OSError, ValueError, IndexError):  # no /proc: cannot tell, assume quiet
        return 0.0
    return (b1 - b0) / max(1, t1 - t0) * (os.cpu_count() or 1)


def wait_quiet(max_busy: float = 0.3, max_wait: float = 1800.0, log: Callable[[str], None] = print) -> float:
    """Wait until other processes use at most ``max_busy`` cores (the machine is shared; a run
    that gets one of two cores with two threads is 3-5x slower, not 2x). Returns seconds waited."""
    t0 = time.perf_counter()
    busy = busy_cores()
    announced = False
    while busy > max_busy and time.perf_counter() - t0 < max_wait:
        if not announced:
            log(f"  (machine busy: {busy:.2f} cores used by other processes; waiting up to {max_wait:.0f} s)")
            announced = True
        time.sleep(4.0)
        busy = busy_cores()
    return time.perf_counter() - t0


def run_interleaved(contenders: list[Contender], repeats: int, *, score: Callable | None = None,
                    seed: int = 0, log: Callable[[str], None] = print, quiet: bool = False,
                    min_cpu_per_wall: float = 0.0, max_retries: int = 6) -> dict[str, Timing]:
    """Each repeat runs every contender once, in a shuffled order (seeded); wall time per run.

    ``score(name, x_adv) -> (robust_accuracy, budget_dict)`` is called outside the timed region.
    Also records this process's CPU time per run (CPU/wall well below the thread count means
    other processes took the cores) and the load average, to spot a contaminated run.
    With ``quiet``, each run waits for the machine to be quiet (:func:`wait_quiet`) first, and
    a run whose CPU/wall falls below ``min_cpu_per_wall`` (another process took a core
    meanwhile) is discarded and run again, at most ``max_retries`` times (each discarded time is
    kept in ``discarded_seconds``).
    Before each run the global torch RNG is seeded with ``seed * 1000 + repeat`` so libraries
    that draw their random start from it are reproducible.
    """
    rng = random.Random(seed)
    timings = {c.name: Timing(c.name, meta=dict(c.meta)) for c in contenders}
    for r in range(repeats):
        order = list(contenders)
        rng.shuffle(order)
        for c in order:
            t = timings[c.name]
            for attempt in range(max_retries + 1):
                if quiet:
                    wait_quiet(log=log)
                torch.manual_seed(seed * 1000 + r)
                c0, t0 = time.process_time(), time.perf_counter()
                out = c.run()
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                load = os.getloadavg()[0]
                if cpu / dt >= min_cpu_per_wall:
                    break
                if attempt == max_retries:
                    log(f"  repeat {r + 1}/{repeats} {c.name}: still contended after {max_retries} retries; kept")
                    break
                t.discarded_seconds.append(dt)
                log(f"  repeat {r + 1}/{repeats} {c.name:<28s} {dt:8.2f} s  cpu/wall {cpu / dt:4.2f}: contended, discarded")
            t.seconds.append(dt)
            t.cpu_seconds.append(cpu)
            t.loadavg.append(load)
            msg = f"  repeat {r + 1}/{repeats} {c.name:<28s} {dt:8.2f} s  cpu/wall {cpu / dt:4.2f}  load {load:4.1f}"
            if out is not None and score is not None:
                acc, budget = score(c.name, out)
                t.robust_accuracy.append(acc)
                t.max_linf.append(budget["max_linf"])
                t.budget_ok.append(budget["ok"])
                msg += f"  robust acc {acc:.3f}  max|d| {budget['max_linf']:.4f}{'' if budget['ok'] else '  OUT OF BUDGET'}"
            log(msg)
    return timings


def ratio_stats(a: Timing, b: Timing) -> dict:
    """``a`` relative to ``b``: ratio of medians and median of the per-repeat (paired) ratios."""
    paired = [x / y for x, y in zip(a.seconds, b.seconds)]
    return {"ratio_of_medians": a.median / b.median, "median_paired_ratio": statistics.median(paired),
            "paired_ratios": paired}


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for mod in ("gibbon", "torchattacks", "art", "foolbox", "eagerpy", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional peers
            versions[mod] = None
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "versions": versions,
        "argv": sys.argv,
    }


def substitute_on_mnist(target: torch.nn.Module, seed: int, *, n_seeds: int = 150, n_eval: int = 2000, **training):
    """Papernot et al.'s substitute attack on MNIST as the reproduction runs it: an MLP 200-200
    substitute (built under ``seed``) from the first ``n_seeds`` test images, labels only, FGSM
    eps 0.3 crafted on it for the next ``n_eval``; ``training`` goes to ``train_substitute``."""
    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.attacks import FGSM
    from gibbon.oracles import Oracle
    from gibbon.transfer import substitute_attack

    test = gdata.load("mnist", "test", n=n_seeds + n_eval)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        substitute = zoo.build("mlp-200-200", test)
    return substitute_attack(Oracle(target, output="label"), test.x[:n_seeds], substitute, test.x[n_seeds:],
                             test.y[n_seeds:], FGSM(), eps=0.3, step=0.1, seed=seed, classes=test.classes,
                             **{"rounds": 6, **training})


def shuffled_rounds(names, repeats: int, seed: int = 0):
    """``(repeat, name)`` pairs: every name once per repeat, in a seeded shuffled order (interleaving)."""
    rng = random.Random(seed)
    for r in range(repeats):
        order = list(names)
        rng.shuffle(order)
        for name in order:
            yield r, name


def write_result(path, result: dict, log: Callable[[str], None] = print) -> None:
    """Write a benchmark's result JSON (when ``path`` is given) and say where."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    log(f"written to {path}")
