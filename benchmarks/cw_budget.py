"""How far C&W L2 is from convergence at a given budget (targeted, LeNet-5 on MNIST).

Runs :class:`gibbon.attacks.CWL2` on the first ``--n`` MNIST test images x their 9 other
classes against the cached LeNet-5 of ``gibbon reproduce carlini2017-cw`` and prints, per
setting ``lr,initial_const,binary_search_steps,steps``, the targeted success rate, the mean L2
of the successes (the paper's "average case") and the best case (easiest target per image).
A near-converged setting (9 x 1,000) next to the reproduction's 5 x 200 tells whether a gap to
the paper's numbers is the budget's or the model's.

``--model ARCH,EPOCHS,OPTIMIZER,LR`` (repeatable) attacks other zoo models trained on MNIST
instead, each trained once into the model cache: say ``carlini-mnist,5,adam,0.001`` (the
distillation reproduction's) against ``carlini-mnist,50,sgd,0.01`` (Carlini & Wagner's own
recipe: 50 epochs of SGD with momentum 0.9, lr 0.01, batch 128) to see what the training does.

    .venv/bin/python benchmarks/cw_budget.py --n 20 0.01,1e-3,5,200 0.05,1e-2,5,200 0.01,1e-2,9,1000
    .venv/bin/python benchmarks/cw_budget.py --n 30 --threads 2 --model carlini-mnist,5,adam,0.001 \
        --model carlini-mnist,50,sgd,0.01 0.05,1e-2,5,200
"""

from __future__ import annotations

import argparse
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("settings", nargs="+", help="lr,initial_const,binary_search_steps,steps")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", action="append", default=None, metavar="ARCH,EPOCHS,OPTIMIZER,LR",
                    help="a zoo model to attack instead of the reproduction's LeNet-5 (repeatable)")
    ap.add_argument("--train-seed", type=int, default=0, help="seed of the --model trainings (default 0)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.reproductions.minimal_attacks import _model
    from gibbon.zoo.io import read_card

    test = gdata.load("mnist", "test", n=args.n)
    if not args.model:
        run_settings(_model("lenet5", 0, "cpu"), test, args.settings)
        return 0
    for spec in args.model:
        arch, epochs, optimizer, lr = spec.split(",")
        path = zoo.trained(arch, "mnist", epochs=int(epochs), optimizer=optimizer, lr=float(lr), seed=args.train_seed)
        card = read_card(path)
        print(f"{arch}, {epochs} epochs of {optimizer} at lr {lr} (seed {args.train_seed}): clean test accuracy "
              f"{card.get('clean_test_accuracy', float('nan')):.4f}", flush=True)
        run_settings(zoo.load(path).eval(), test, args.settings)
    return 0


def run_settings(model, test, settings) -> None:
    """Targeted C&W L2 over ``test``'s images x their 9 other classes, once per setting."""
    from gibbon.attacks import CWL2
    from gibbon.reproductions.minimal_attacks import _all_targets, _attack, _l2, _predict

    n = len(test)
    x = test.x.repeat_interleave(9, dim=0)
    y, target = _all_targets(test.y)
    for setting in settings:
        lr, const, searches, steps = (float(v) for v in setting.split(","))
        attack = CWL2(steps=int(steps), lr=lr, binary_search_steps=int(searches), initial_const=const)
        start = time.perf_counter()
        x_adv = _attack(model, attack, x, y, target=target, device="cpu", norm="l2", batch_size=len(x))
        hit = _predict(model, x_adv, "cpu") == target
        dist = _l2(x_adv - x)
        best = dist.masked_fill(~hit, float("inf")).reshape(n, 9).min(1).values
        print(f"lr {lr:g} c0 {const:g} search {int(searches)} x {int(steps)}: success {hit.float().mean():.4f}  "
              f"mean L2 {dist[hit].mean():.3f}  best case {best[best.isfinite()].mean():.3f}  "
              f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
