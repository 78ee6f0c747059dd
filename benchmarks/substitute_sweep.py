"""Papernot et al.'s substitute attack (arXiv:1602.02697) on MNIST: seeds, oracles and the MLP ceiling.

For each oracle (a CNN of the zoo, cached by ``zoo.trained``), trains the MLP 200-200 substitute
from the first 150 test images (``--rounds`` 6 augmentations, so 9,600 labels; lambda 0.1, sign
flipped every 3 rounds; the Jacobian of the substitute's probabilities, ``--jacobian``; 10 epochs
of Adam lr 1e-3 per round; labels only) with several substitute seeds, crafts FGSM eps 0.3 on it
for the next 2,000 test images, and prints the oracle's accuracy on them. The "ceiling" row is
the same FGSM from an MLP 200-200 trained on all 50,000 training images (5 epochs): the best an
MLP substitute can transfer. ``gibbon reproduce papernot2017-substitute`` is the tramer-b,
seed-0 cell.

    .venv/bin/python benchmarks/substitute_sweep.py --oracles tramer-b:2 lenet5:5 madry-cnn:2 --seeds 0 1 2

``--rounds 5 --jacobian logit`` is the setting of the earlier rows (CleverHans' tutorial: five
augmentations, 4,800 labels, the gradient of one logit).
"""

from __future__ import annotations

import argparse

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--oracles", nargs="+", default=["tramer-b:2", "lenet5:5", "madry-cnn:2"],
                    help="ARCH:EPOCHS of the zoo's cached MNIST models")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=6, help="Jacobian augmentations rho (paper: 6)")
    ap.add_argument("--jacobian", choices=["probability", "logit"], default="probability")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from common import substitute_on_mnist
    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.attacks import FGSM

    test = gdata.load("mnist", "test", n=2150)
    x, y = test.x[150:], test.y[150:]
    print(f"rho {args.rounds}, jacobian of the {args.jacobian}", flush=True)
    ceiling = zoo.load(zoo.trained("mlp-200-200", "mnist", epochs=5, seed=0, progress=False)).eval()
    x_ceiling = FGSM()(ceiling, x, y, eps=0.3)
    for spec in args.oracles:
        arch, epochs = spec.split(":")
        target = zoo.load(zoo.trained(arch, "mnist", epochs=int(epochs), seed=0, progress=False)).eval()
        with torch.no_grad():
            clean = float((target(x).argmax(1) == y).float().mean())
            top = float((target(x_ceiling).argmax(1) == y).float().mean())
        print(f"{arch}: clean {clean:.3f}; FGSM from the full-data MLP: {top:.3f}", flush=True)
        for seed in args.seeds:
            result = substitute_on_mnist(target, seed, rounds=args.rounds, jacobian=args.jacobian)
            print(f"  substitute seed {seed}: oracle accuracy {result.adversarial_accuracy:.3f}  substitute "
                  f"accuracy {result.substitute_accuracy:.3f}  agreement {result.agreement:.3f}  "
                  f"queries {result.queries}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
