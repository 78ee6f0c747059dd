"""Decision-based attacks on LeNet-5 / MNIST: median L2 distance of HopSkipJump and Boundary by query budget.

Attacks the first ``--n`` MNIST test images (untargeted, L2, seed 0) against the cached LeNet-5
of ``zoo.trained("lenet5", "mnist", epochs=5, seed=0)`` (trained on first use, about a minute),
once per budget, each attack seeing the model only through a label-only Oracle. Prints, per
attack and budget, the success rate on the correctly classified images, the median L2 of the
successes, the most queries any image used, and the wall time; with ``--reference`` also C&W-L2
(white-box, 9 x 1,000 steps) as an estimate of the true minimal distance. One thread:

    .venv/bin/python benchmarks/decision_based.py --n 20 --budgets 1000,5000,10000 --reference
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--budgets", default="1000,5000,10000")
    ap.add_argument("--attacks", default="hopskipjump,boundary")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reference", action="store_true", help="also run white-box C&W-L2 for comparison")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.attacks import boundary, cw_l2, hopskipjump
    from gibbon.core.norms import L2
    from gibbon.oracles import Oracle

    model = zoo.load(zoo.trained("lenet5", "mnist", epochs=5, seed=0, progress=False)).eval()
    test = gdata.load("mnist", "test", n=args.n)
    x, y = test.x, test.y
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    print(f"LeNet-5 on the first {args.n} MNIST test images: {int(correct.sum())} classified correctly")

    def report(name, x_adv, seconds, queries=None):
        with torch.no_grad():
            fooled = (model(x_adv).argmax(1) != y) & correct
        dist = L2.distance(x_adv - x)[fooled]
        median = float(dist.median()) if dist.numel() else float("nan")
        extra = f", max queries {queries}" if queries is not None else ""
        print(f"{name:<28} success {int(fooled.sum())}/{int(correct.sum())}, median L2 {median:.4f}{extra}, "
              f"{seconds:.1f} s", flush=True)

    attacks = {"hopskipjump": hopskipjump, "boundary": boundary}
    for name in args.attacks.split(","):
        for budget in (int(b) for b in args.budgets.split(",")):
            oracle = Oracle(model, n=args.n)  # counts the queries the attack makes per image
            start = time.perf_counter()
            x_adv = attacks[name](oracle, x, y, max_queries=budget, generator=torch.Generator().manual_seed(0))
            report(f"{name} @ {budget} queries", x_adv, time.perf_counter() - start, int(oracle.queries.max()))
    if args.reference:
        start = time.perf_counter()
        x_adv = cw_l2(model, x, y, steps=1000, binary_search_steps=9)
        report("cw-l2 (white-box) 9 x 1000", x_adv, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
