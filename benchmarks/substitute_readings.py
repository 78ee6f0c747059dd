"""Papernot et al.'s substitute attack (arXiv:1602.02697): how two readings of the paper, and a
few training choices around them, move the result.

The readings: ``rounds`` (rho) counts augmentations, so rho = 6 trains the last substitute on
2^6 x 150 = 9,600 labels (Table 1 trains rho = 0..6, the first on the seeds alone), or counts
trainings as CleverHans' tutorial does (five augmentations, 4,800 labels); and the augmentation
follows the gradient of the substitute's probability F for the oracle's label (the paper's F,
through its log), or of one logit. Each row trains the MLP 200-200 substitute from the first 150
MNIST test images with three seeds against Tramer et al.'s model B (labels only), crafts FGSM
eps 0.3 on it for the next 2,000 images and prints the oracle's accuracy on them and the
substitute's test accuracy on the same images.

    mkdir -p benchmarks/results && OMP_NUM_THREADS=1 .venv/bin/python benchmarks/substitute_readings.py \
        | tee benchmarks/results/substitute_readings.log
"""

from __future__ import annotations

import argparse

import torch

ROWS = {
    "5 augmentations, logit (CleverHans' reading)": {"rounds": 5, "jacobian": "logit"},
    "5 augmentations, probability": {"rounds": 5},
    "6 augmentations, logit": {"jacobian": "logit"},
    "6 augmentations, probability (the default)": {},
    "the default, lambda negative first (CleverHans' tutorial)": {"first_sign": -1},
    "the default, no sign flip": {"flip_every": 0},
    "the default, SGD lr 0.01 momentum 0.9": {"optimizer": "sgd", "lr": 1e-2},
    "the default, a 6-epoch oracle": {"oracle_epochs": 6},
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), help="row names (default: all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from common import substitute_on_mnist
    from gibbon import zoo

    for name in args.rows:
        options = dict(ROWS[name])
        oracle_epochs = options.pop("oracle_epochs", 2)
        target = zoo.load(zoo.trained("tramer-b", "mnist", epochs=oracle_epochs, seed=0, progress=False)).eval()
        accuracy, substitute_accuracy = [], []
        for seed in args.seeds:
            result = substitute_on_mnist(target, seed, **options)
            accuracy.append(result.adversarial_accuracy)
            substitute_accuracy.append(result.substitute_accuracy)
            print(f"  {name}, seed {seed}: oracle accuracy {result.adversarial_accuracy:.4f}  substitute accuracy "
                  f"{result.substitute_accuracy:.4f}  labels {result.queries}", flush=True)
        print(f"{name}: oracle accuracy {' / '.join(f'{a:.1%}' for a in accuracy)}, mean "
              f"{sum(accuracy) / len(accuracy):.1%}; substitute accuracy mean "
              f"{sum(substitute_accuracy) / len(substitute_accuracy):.1%}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
