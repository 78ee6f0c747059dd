"""gibbon's reliable suite vs. the official AutoAttack (pyautoattack 0.2.0, standard version).

Model: wong-net trained on MNIST with fast adversarial training (Wong, Rice & Kolter 2020,
arXiv:2001.03994; eps 0.3, step 0.375, 10 epochs; ``gibbon.reproductions.reliable``), the first
1,000 MNIST test images, L-infinity eps 0.3, batches of 250, 2 threads. Contenders, interleaved
in one process (each repeat runs both in a shuffled order):

* ``gibbon-reliable``: ``evaluate(model, data, eps=0.3, suite="reliable")`` (APGD-CE, APGD-T x 9,
  FAB-T x 9, Square 5,000 queries, as a cascade) -- worst-case robust accuracy;
* ``autoattack-standard``: ``AutoAttack(model, eps=0.3, norm="Linf", version="standard",
  seed=0).run_standard_evaluation(x, y, batch_size=250)`` (Croce & Hein 2020,
  arXiv:2003.01690) -- accuracy on its returned adversarial batch (checked in the ball and box).

Targets: gibbon's robust accuracy <= AutoAttack's + 0.5 points; gibbon's median time <=
AutoAttack's.

    .venv/bin/python benchmarks/bench_reliable.py --repeats 3 --json benchmarks/results/reliable.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

EPS = 0.3
ACC_SLACK = 0.005


class _Collect(logging.Handler):
    """Keeps AutoAttack's own log lines (per-attack robust accuracy and cumulative time)."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0, help="training seed of the fast-AT model")
    ap.add_argument("--model", type=Path, default=None,
                    help="another saved zoo model to attack instead (e.g. a PGD-trained one)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/reliable.json"))
    args = ap.parse_args(argv)

    common.set_threads(args.threads)
    from pyautoattack import AutoAttack
    import pyautoattack

    from gibbon import data as gdata
    from gibbon.evaluation import evaluate
    from gibbon.reproductions.reliable import fast_mnist_model, model_path

    from gibbon import zoo

    model = (zoo.load(args.model) if args.model else fast_mnist_model(seed=args.seed, progress=True)).eval()
    model_file = args.model or model_path(args.seed)
    data = gdata.load("mnist", "test", n=args.n)
    x, y = data.x.contiguous(), data.y.contiguous()
    clean = common.accuracy(model, x, y)
    print(f"model {model_file}  clean accuracy {clean:.3f} on {args.n} images")

    logger = logging.getLogger("auto-attack")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    collect = _Collect()
    logger.addHandler(collect)
    details: dict[str, list] = {"gibbon-reliable": [], "autoattack-standard": []}

    def run_gibbon():
        return evaluate(model, data, eps=EPS, suite="reliable", batch_size=250, seed=0, progress=False)

    def run_autoattack():
        collect.lines.clear()
        adversary = AutoAttack(model, eps=EPS, norm="Linf", version="standard", device="cpu", seed=0)
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=250)
        details["autoattack-standard"].append(list(collect.lines))
        return x_adv

    def score(name, out):
        if name == "gibbon-reliable":
            details[name].append([{"attack": r.attack, "cumulative_robust_accuracy": r.robust_accuracy,
                                   "seconds": r.seconds} for r in out.results])
            # evaluate() itself checks every adversarial output against the ball and the box
            return out.worst_case_accuracy(EPS), {"max_linf": EPS, "ok": True}
        return common.accuracy(model, out, y), common.check_budget(out, x, EPS)

    contenders = [common.Contender("gibbon-reliable", run_gibbon), common.Contender("autoattack-standard", run_autoattack)]
    t0 = time.perf_counter()
    timings = common.run_interleaved(contenders, args.repeats, score=score)
    g, a = timings["gibbon-reliable"], timings["autoattack-standard"]
    g_acc, a_acc = statistics.median(g.robust_accuracy), statistics.median(a.robust_accuracy)
    ratio = common.ratio_stats(g, a)
    targets = {
        "accuracy": {"rule": "gibbon <= autoattack + 0.5 points", "gibbon": g_acc, "autoattack": a_acc,
                     "ok": g_acc <= a_acc + ACC_SLACK},
        "time": {"rule": "gibbon median time <= autoattack's", "gibbon_s": g.median, "autoattack_s": a.median,
                 "ok": g.median <= a.median},
    }
    payload = {
        "benchmark": "reliable suite vs official AutoAttack (standard), MNIST fast-AT wong-net, Linf eps 0.3",
        "model": str(model_file), "n": args.n, "eps": EPS, "batch_size": 250, "threads": args.threads,
        "repeats": args.repeats, "clean_accuracy": clean, "pyautoattack": pyautoattack.__version__,
        "timings": {k: v.as_dict() for k, v in timings.items()}, "ratio_gibbon_over_autoattack": ratio,
        "targets": targets, "details": details, "machine": common.machine_info(),
        "total_seconds": time.perf_counter() - t0,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")

    print("\n| contender | median time (s) | runs (s) | robust accuracy | cpu/wall |\n|---|---|---|---|---|")
    for t in (g, a):
        cpw = statistics.median(c / w for c, w in zip(t.cpu_seconds, t.seconds))
        print(f"| {t.name} | {t.median:.1f} | {', '.join(f'{s:.1f}' for s in t.seconds)} | "
              f"{', '.join(f'{r:.3f}' for r in t.robust_accuracy)} | {cpw:.2f} |")
    print(f"\nclean {clean:.3f}; time ratio gibbon/AutoAttack {ratio['ratio_of_medians']:.2f} (median of paired "
          f"{ratio['median_paired_ratio']:.2f}); accuracy target {'ok' if targets['accuracy']['ok'] else 'MISSED'}, "
          f"time target {'ok' if targets['time']['ok'] else 'MISSED'}; wrote {args.json}")
    return 0 if all(t["ok"] for t in targets.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
