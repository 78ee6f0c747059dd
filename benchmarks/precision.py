"""The main job's attacks in float32 and under bf16 autocast: robust accuracy and time, same model and images.

Madry et al.'s MNIST CNN (the main job's, from the zoo cache), the first ``--n`` MNIST test images,
FGSM, BIM (early stop) and PGD-40 (random start, early stop) at L-inf eps 0.1 / 0.2 / 0.3, batch
250, seed 0. ``fp32``: the model as it is; ``bf16``: ``gibbon.zoo.precision.Autocast(model,
"bf16")`` (what ``gibbon evaluate --precision bf16`` runs); ``--compile`` adds a
``torch.compile``-d float32 contender. Interleaved repeats, medians; torch on ``--threads``.

On a CPU without bfloat16 matrix units bf16 is slower (the point there is the robust accuracy);
the speed that matters is a GPU's, which this script measures when run there (``--device cuda``).

Rerun: ``.venv/bin/python benchmarks/precision.py --n 1000 --repeats 2 --json
benchmarks/results/precision.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ATTACKS = ["fgsm", "bim:early_stop=true", "pgd:steps=40,step_size=0.01,random_start=true,early_stop=true"]
EPS = [0.1, 0.2, 0.3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    common.set_threads(args.threads)

    from gibbon import data, zoo
    from gibbon.evaluation import evaluate
    from gibbon.reproductions._common import MAIN_ARCH, MAIN_DATASET, MAIN_EPOCHS
    from gibbon.zoo.precision import accelerate

    model = zoo.load(zoo.trained(MAIN_ARCH, MAIN_DATASET, epochs=MAIN_EPOCHS, seed=0), device=args.device).eval()
    test = data.load("mnist", "test", n=args.n)
    contenders = {"fp32": model, "bf16": accelerate(model, precision="bf16", device=args.device)}
    if args.compile:
        contenders["fp32-compiled"] = accelerate(model, compile=True, device=args.device)
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for r, name in common.shuffled_rounds(contenders, args.repeats):
        t0 = time.perf_counter()
        report = evaluate(contenders[name], test, ATTACKS, EPS, batch_size=250, seed=0, device=args.device,
                          progress=False)
        wall = time.perf_counter() - t0
        robust = {f"{res.attack}@{res.eps:g}": res.robust_accuracy for res in report.results}
        worst = {f"{w.eps:g}": w.robust_accuracy for w in report.worst_case}
        runs[name].append({"seconds": wall, "clean": report.clean_accuracy, "robust": robust, "worst": worst})
        print(f"  repeat {r + 1}/{args.repeats} {name:<14s} {wall:7.1f} s  clean {report.clean_accuracy:.3f}  "
              f"worst case {' / '.join(f'{v:.3f}' for v in worst.values())}")
    med = {name: statistics.median(run["seconds"] for run in rs) for name, rs in runs.items()}
    gaps = {name: max(abs(rs[0]["robust"][k] - runs["fp32"][0]["robust"][k]) for k in rs[0]["robust"])
            for name, rs in runs.items()}
    for name in runs:
        print(f"{name}: median {med[name]:.1f} s ({med[name] / med['fp32']:.2f} x fp32), largest robust-accuracy gap "
              f"to fp32 {gaps[name] * 100:.1f} points")
    common.write_result(args.json, {"settings": vars(args) | {"json": str(args.json)}, "machine": common.machine_info(),
                                    "runs": runs, "median_s": med, "max_gap_to_fp32": gaps})


if __name__ == "__main__":
    main()
