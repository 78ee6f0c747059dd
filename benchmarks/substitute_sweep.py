"""Papernot et al.'s substitute attack (arXiv:1602.02697) on MNIST: seeds, oracles and the MLP ceiling.

For each oracle (a CNN of the zoo, cached by ``zoo.trained``), trains the MLP 200-200 substitute
from the first 150 test images (6 rounds, lambda 0.1, sign flipped every 3 rounds, 10 epochs of
Adam lr 1e-3 per round; labels only) with several substitute seeds, crafts FGSM eps 0.3 on it
for the next 2,000 test images, and prints the oracle's accuracy on them. The "ceiling" row is
the same FGSM from an MLP 200-200 trained on all 50,000 training images (5 epochs): the best an
MLP substitute can transfer. ``gibbon reproduce papernot2017-substitute`` is the tramer-b,
seed-0 cell.

    .venv/bin/python benchmarks/substitute_sweep.py --oracles tramer-b:2 lenet5:5 madry-cnn:2 --seeds 0 1 2
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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.attacks import FGSM
    from gibbon.oracles import Oracle
    from gibbon.transfer import substitute_attack

    test = gdata.load("mnist", "test", n=2150)
    seeds, x, y = test.x[:150], test.x[150:], test.y[150:]
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
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                substitute = zoo.build("mlp-200-200", test)
            result = substitute_attack(Oracle(target, output="label"), seeds, substitute, x, y, FGSM(), eps=0.3,
                                       rounds=6, step=0.1, seed=seed, classes=test.classes)
            print(f"  substitute seed {seed}: oracle accuracy {result.adversarial_accuracy:.3f}  substitute "
                  f"accuracy {result.substitute_accuracy:.3f}  agreement {result.agreement:.3f}  "
                  f"queries {result.queries}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
