"""Where does gibbon's PGD spend its time beyond the floor? (one batch of 250, Madry CNN)

    .venv/bin/python benchmarks/profile_pgd.py [--steps 40] [--repeats 5] [--batches 1]

Prints (1) interleaved wall times of: the floor (``steps`` fwd+bwd w.r.t. the input), gibbon's
PGD and BIM, torchattacks' PGD, and a bare PGD loop written inline (the same ops torchattacks
does); (2) a torch.profiler table of gibbon's PGD next to the floor's, by operator (self CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

EPS, STEP = 0.3, 0.01


def bare_pgd(model, x, y, steps, g):
    delta = torch.empty_like(x).uniform_(-EPS, EPS, generator=g)
    x_adv = (x + delta).clamp(0, 1)
    for _ in range(steps):
        xv = x_adv.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xv), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xv)
        x_adv = (x + (xv.detach() + STEP * grad.sign() - x).clamp(-EPS, EPS)).clamp(0, 1)
    return x_adv


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n", type=int, default=250)
    p.add_argument("--model", choices=("cnn", "wong"), default="cnn")
    p.add_argument("--profile", action="store_true", help="also print torch.profiler and cProfile tables")
    args = p.parse_args(argv)
    common.set_threads()
    import torchattacks
    from gibbon.attacks import bim, pgd

    model = common.madry_cnn() if args.model == "cnn" else common.adv_trained_wong_net(progress=False)
    x, y = common.mnist_test(args.n)
    s = args.steps
    ta = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=s, random_start=True)
    jobs = {
        "floor": lambda: common.floor(model, x, y, s),
        "gibbon-pgd": lambda: [pgd(model, xb, yb, eps=EPS, steps=s, step_size=STEP, random_start=True)
                               for xb, yb in common.batches(x, y)],
        "gibbon-bim": lambda: [bim(model, xb, yb, eps=EPS, steps=s, step_size=STEP)
                               for xb, yb in common.batches(x, y)],
        "torchattacks-pgd": lambda: [ta(xb, yb) for xb, yb in common.batches(x, y)],
        "bare-loop-pgd": lambda: [bare_pgd(model, xb, yb, s, torch.Generator().manual_seed(0))
                                  for xb, yb in common.batches(x, y)],
    }
    for f in jobs.values():  # warm-up
        f()
    times = {k: [] for k in jobs}
    for r in range(args.repeats):
        for k in list(jobs)[r % len(jobs):] + list(jobs)[:r % len(jobs)]:
            common.wait_quiet(log=lambda m: None)
            t0 = time.perf_counter()
            jobs[k]()
            times[k].append(time.perf_counter() - t0)
    fl = statistics.median(times["floor"])
    print(f"{args.n} images, batch 250, {s} steps, {args.repeats} interleaved repeats (medians)")
    for k, v in times.items():
        print(f"  {k:<18s} {statistics.median(v):7.3f} s  x floor {statistics.median(v) / fl:6.3f}   "
              f"runs {' '.join(f'{t:.2f}' for t in v)}")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        xb, yb = x[:250], y[:250]
        for name, f in (("floor", lambda: common.floor(model, xb, yb, s)),
                        ("gibbon-pgd", lambda: pgd(model, xb, yb, eps=EPS, steps=s, step_size=STEP))):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                f()
            print(f"\n== torch.profiler: {name} (1 batch, {s} steps) ==")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
        import cProfile
        import pstats

        pr = cProfile.Profile()
        pr.enable()
        for xb, yb in common.batches(x, y):
            pgd(model, xb, yb, eps=EPS, steps=s, step_size=STEP)
        pr.disable()
        print(f"\n== cProfile: gibbon-pgd ({args.n} images, {s} steps), by cumulative time ==")
        pstats.Stats(pr).sort_stats("cumulative").print_stats(35)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
