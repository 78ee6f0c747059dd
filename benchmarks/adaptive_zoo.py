"""Adaptive evaluation on the masked MNIST zoo (:mod:`gibbon.reproductions.masked_zoo`), with timings.

For each model: naive PGD-100 accuracy, the verdict, the remedies ``diagnose`` chose, the
adaptive robust accuracy, a hand-written adaptive attack's accuracy (the ground truth), and
for the honest models ``evaluate --suite reliable`` on the same images: its accuracy and the
time ratio diagnose / reliable (same process, one after the other).

    .venv/bin/python benchmarks/adaptive_zoo.py --n 500 --json benchmarks/results/adaptive_zoo.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--only", nargs="*", default=None, help="model names (substrings) to run")
    parser.add_argument("--reliable-repeats", type=int, default=1, help="timings of the reliable suite per honest model")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from gibbon.evaluation import evaluate
    from gibbon.reproductions.masked_zoo import EPS, evaluate_zoo

    rows = []

    def on_row(row, model, test):
        row["reliable"] = row["reliable_seconds"] = None
        if row["kind"] == "honest":
            times = []
            for _ in range(args.reliable_repeats):
                start = time.perf_counter()
                report = evaluate(model, test, suite="reliable", eps=[EPS], batch_size=args.batch_size,
                                  seed=args.seed, progress=False)
                times.append(time.perf_counter() - start)
            row["reliable"] = report.worst_case[0].robust_accuracy
            row["reliable_seconds"] = sorted(times)[len(times) // 2]
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(".tmp")
            tmp.write_text(json.dumps({"n": args.n, "eps": EPS, "seed": args.seed, "threads": torch.get_num_threads(),
                                       "rows": rows}, indent=1))
            tmp.replace(args.json)

    evaluate_zoo(n=args.n, seed=args.seed, batch_size=args.batch_size, only=args.only, on_row=on_row)
    print()
    print("| model | naive PGD-100 | verdict | remedies | adaptive | hand-written | gap (pts) | diagnose s | reliable |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rel = "" if r["reliable_seconds"] is None else (f"{r['reliable']:.1%} in {r['reliable_seconds']:.0f} s "
                                                         f"(ratio {r['diagnose_seconds'] / r['reliable_seconds']:.2f})")
        print(f"| {r['model']} | {r['naive_pgd100']:.1%} | {r['verdict']} | {', '.join(r['remedies']) or '-'} | "
              f"{r['adaptive']:.1%} | {r['ground_truth']:.1%} | {100 * (r['adaptive'] - r['ground_truth']):+.1f} | "
              f"{r['diagnose_seconds']:.0f} | {rel} |")


if __name__ == "__main__":
    main()
