"""DP-SGD's price in time: one epoch of DP-SGD (Opacus: per-example gradients, clipping, noise,
Poisson batches) against one epoch of ordinary SGD on the same images, model and batch size.

    .venv/bin/python benchmarks/dp_epoch_time.py [--n 50000] [--repeats 3] [--archs tanh-cnn,lenet5] \\
        [--json results/dp_epoch_time.json]

Settings: the first ``n`` MNIST training images (default: all 50,000, one epoch), expected batch
256, SGD with momentum 0.9, lr 0.5 (DP) / 0.05 (plain), noise 1.0 and clip 0.1 for DP; 2 threads. Each repeat runs every
contender once in a shuffled order (``common.run_interleaved``, waiting for a quiet machine);
medians are quoted. The "floor" is one forward + backward pass per batch with parameter
gradients (what any training epoch must do), so ``plain / floor`` is the loop's own overhead and
``DP / plain`` is what privacy costs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Contender, run_interleaved, set_threads  # noqa: E402

from gibbon import data, zoo  # noqa: E402
from gibbon.defenses.dp_sgd import train_dp  # noqa: E402

BATCH = 256


def _fresh(arch: str, train):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return zoo.build(arch, train)


def floor_epoch(arch, train):
    model = _fresh(arch, train)
    for i in range(0, len(train.y), BATCH):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(train.x[i:i + BATCH]), train.y[i:i + BATCH]).backward()


def plain_epoch(arch, train):
    zoo.fit(_fresh(arch, train), train, epochs=1, batch_size=BATCH, optimizer="sgd", lr=0.05, progress=False)


def dp_epoch(arch, train):
    train_dp(_fresh(arch, train), train, noise=1.0, clip=0.1, delta=1e-5, epochs=1, batch_size=BATCH,
             optimizer="sgd", lr=0.5, progress=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--archs", default="tanh-cnn,lenet5")
    parser.add_argument("--json")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    args = parser.parse_args(argv)
    set_threads()
    train = data.load("mnist", "train", n=args.n)
    contenders = []
    for arch in args.archs.split(","):
        contenders += [Contender(f"{arch} floor", lambda a=arch: floor_epoch(a, train)),
                       Contender(f"{arch} plain SGD", lambda a=arch: plain_epoch(a, train)),
                       Contender(f"{arch} DP-SGD", lambda a=arch: dp_epoch(a, train))]
    timings = run_interleaved(contenders, args.repeats, quiet=not args.no_wait, min_cpu_per_wall=1.5)
    rows = []
    print(f"\n{args.n} images, expected batch {BATCH}, {math.ceil(args.n / BATCH)} steps, medians of {args.repeats}")
    for arch in args.archs.split(","):
        fl, plain, dp = (timings[f"{arch} {k}"].median for k in ("floor", "plain SGD", "DP-SGD"))
        rows.append({"arch": arch, "floor_s": fl, "plain_s": plain, "dp_s": dp, "dp_over_plain": dp / plain,
                     "plain_over_floor": plain / fl, "dp_over_floor": dp / fl})
        print(f"{arch:10s} floor {fl:6.2f} s  plain {plain:6.2f} s  DP {dp:6.2f} s  DP/plain {dp / plain:5.2f}x  "
              f"plain/floor {plain / fl:4.2f}x")
    if args.json:
        from gibbon.evaluation.report import write_json_atomic

        write_json_atomic(args.json, {"n": args.n, "batch": BATCH, "repeats": args.repeats, "rows": rows,
                                      "timings": {k: t.as_dict() for k, t in timings.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
