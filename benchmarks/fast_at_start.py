"""Ablation: the random start of fast adversarial training, clipped to the box or not.

Trains Wong, Rice & Kolter's (2020, arXiv:2001.03994) MNIST network with
:func:`gibbon.defenses.fast_objective` (eps 0.3, step 0.375, 10 epochs, batch 100, Adam,
cyclic lr up to 5e-3) once with ``start_in_box=False`` (their code) and once with ``True``, and
prints clean and PGD-40 (step 0.01, random start) accuracy on the first 500 MNIST test images
after every epoch. Clipping the start makes it one-sided at black pixels, and the model
overfits catastrophically (PGD accuracy collapses while training continues).

    .venv/bin/python benchmarks/fast_at_start.py --seed 0
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.attacks import PGD
    from gibbon.defenses.fast import MNIST_RECIPE, fast_objective

    train, probe = gdata.load("mnist", "train"), gdata.load("mnist", "test", n=500)
    for start_in_box in (False, True):
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            model = zoo.build("wong-net", train)

        def report(epoch, entry, model=model):
            model.eval()
            x_adv = PGD(steps=40, step_size=0.01)(model, probe.x, probe.y, eps=0.3,
                                                   generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                robust = float((model(x_adv).argmax(1) == probe.y).float().mean())
                clean = float((model(probe.x).argmax(1) == probe.y).float().mean())
            model.train()
            print(f"start_in_box={start_in_box} epoch {epoch}: clean {clean:.3f}  PGD-40 {robust:.3f}  "
                  f"loss {entry['train_loss']:.3f}", flush=True)

        objective = fast_objective(MNIST_RECIPE["eps"], step_size=MNIST_RECIPE["step_size"], start_in_box=start_in_box)
        start = time.perf_counter()
        zoo.fit(model, train, **MNIST_RECIPE["fit"], objective=objective, seed=args.seed, callback=report)
        print(f"start_in_box={start_in_box}: {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
