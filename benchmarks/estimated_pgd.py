"""PGD through NES / SPSA gradient estimates against the fast-adversarially-trained wong-net.

White-box PGD and the same PGD on an :class:`gibbon.oracles.EstimatedGradient` view of the model
(scores only, every query counted), on the first ``--n`` MNIST test images, L-infinity eps 0.3.
The wong-net is ``gibbon.reproductions.reliable.fast_mnist_model`` (trained on first use, ~1 min).
Prints robust accuracy and queries per image for each setting.

    .venv/bin/python benchmarks/estimated_pgd.py --n 100 --steps 40 --samples 100 200
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--samples", type=int, nargs="+", default=[100, 200])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gibbon import data as gdata
    from gibbon.attacks import PGD
    from gibbon.oracles import EstimatedGradient, Oracle
    from gibbon.reproductions.reliable import fast_mnist_model

    model = fast_mnist_model(seed=0).eval().requires_grad_(False)
    test = gdata.load("mnist", "test", n=args.n)
    attack = PGD(steps=args.steps, step_size=0.01 * 40 / args.steps)

    def accuracy(x_adv):
        with torch.no_grad():
            return float((model(x_adv).argmax(1) == test.y).float().mean())

    rows = [{"setting": "clean", "robust_accuracy": accuracy(test.x)}]
    start = time.perf_counter()
    rows.append({"setting": f"white-box PGD-{args.steps}", "robust_accuracy": accuracy(
        attack(model, test.x, test.y, eps=0.3, generator=torch.Generator().manual_seed(0))),
        "seconds": time.perf_counter() - start})
    for method in ("nes", "spsa"):
        for samples in args.samples:
            black_box = EstimatedGradient(Oracle(model), method=method, samples=samples)
            start = time.perf_counter()
            x_adv = attack(black_box, test.x, test.y, eps=0.3, generator=torch.Generator().manual_seed(0))
            rows.append({"setting": f"{method.upper()}-PGD-{args.steps}, {samples} samples",
                         "robust_accuracy": accuracy(x_adv), "queries_per_image": black_box.queries / args.n,
                         "seconds": time.perf_counter() - start})
    for row in rows:
        extra = f"  queries/image {row['queries_per_image']:.0f}" if "queries_per_image" in row else ""
        print(f"{row['setting']:<32s} robust {row['robust_accuracy']:.3f}{extra}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "steps": args.steps, "eps": 0.3, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
