"""Papernot et al.'s substitute attack (arXiv:1602.02697): training variants that keep the
issue's setting (150 seeds, 6 rounds, lambda 0.1 flipped every 3 rounds, MLP 200-200, labels
only, FGSM eps 0.3), against Tramer et al.'s model B trained ``--oracle-epochs`` epochs.

Each variant trains the substitute from three seeds and prints, per seed, the oracle's accuracy
on the 2,000 transferred examples / the substitute's accuracy, and their mean. Variants:
``base`` (the reproduction: Adam 1e-3, 10 epochs a round, training continued across rounds);
``sgd`` (SGD lr 1e-2, momentum 0.9, the paper's optimiser); ``wd`` (weight decay 5e-4);
``reinit`` (a fresh substitute each round); ``ens3``/``ens5`` (3 or 5 MLPs trained on the same
labelled points, their averaged logits used for the augmentation and for FGSM: no extra
queries, as in Liu et al. 2017's ensembles, arXiv:1611.02770). Every variant runs against the
first ``--oracle-epochs`` oracle; the others get ``base`` only.

    .venv/bin/python benchmarks/substitute_variants.py --oracle-epochs 2 6
"""

from __future__ import annotations

import argparse
import time

import torch

VARIANTS = {
    "base": {},
    "sgd": {"optimizer": "sgd", "lr": 1e-2},
    "wd": {"weight_decay": 5e-4},
    "reinit": {"reinit": True},
    "ens3": {"members": 3},
    "ens5": {"members": 5},
}


class MeanLogits(torch.nn.Module):
    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x):
        return torch.stack([m(x) for m in self.members]).mean(0)


def run_variant(oracle_model, test, seed: int, *, members: int = 1, optimizer: str = "adam", lr: float = 1e-3,
                weight_decay: float = 0.0, reinit: bool = False, rounds: int = 6, step: float = 0.1,
                flip_every: int = 3, epochs: int = 10):
    """Algorithm 1 with the variant's training; returns (oracle accuracy on FGSM, substitute accuracy, queries)."""
    from gibbon import zoo
    from gibbon.attacks import FGSM
    from gibbon.data import Dataset
    from gibbon.oracles import Oracle
    from gibbon.transfer._batches import predicted_labels
    from gibbon.transfer.substitute import jacobian_augmentation

    seeds, x, y = test.x[:150], test.x[150:], test.y[150:]
    oracle = Oracle(oracle_model, output="label")

    def build(i):
        with torch.random.fork_rng():
            torch.manual_seed(seed * 100 + i)
            return zoo.build("mlp-200-200", test)

    subs = [build(i) for i in range(members)]
    points, labels = seeds.clone(), predicted_labels(oracle, seeds, 512)
    for rho in range(rounds):
        if reinit:
            subs = [build(i) for i in range(members)]
        data = Dataset("substitute", "train", points, labels, tuple(test.classes), (0.0, 1.0))
        for i, sub in enumerate(subs):
            zoo.fit(sub, data, epochs=epochs, batch_size=128, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                    seed=seed + rho + 17 * i, progress=False)
            sub.eval()
        substitute = MeanLogits(subs).eval()
        if rho == rounds - 1:
            break
        lam = step * (-1) ** (rho // flip_every)
        new = jacobian_augmentation(substitute, points, labels, lam, (0.0, 1.0))
        points, labels = torch.cat([points, new]), torch.cat([labels, predicted_labels(oracle, new, 512)])
    x_adv = FGSM()(substitute, x, y, eps=0.3)
    with torch.no_grad():
        return (float((oracle_model(x_adv).argmax(1) == y).float().mean()),
                float((substitute(x).argmax(1) == y).float().mean()), oracle.total)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--oracle-epochs", type=int, nargs="+", default=[2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gibbon import data as gdata
    from gibbon import zoo

    test = gdata.load("mnist", "test", n=2150)
    for oracle_epochs in args.oracle_epochs:
        oracle_model = zoo.load(zoo.trained("tramer-b", "mnist", epochs=oracle_epochs, seed=0, progress=False)).eval()
        names = args.variants if oracle_epochs == args.oracle_epochs[0] else ["base"]
        for name in names:
            start = time.perf_counter()
            runs = [run_variant(oracle_model, test, s, **VARIANTS[name]) for s in args.seeds]
            cells = "  ".join(f"{a:.3f}/{b:.3f}" for a, b, _ in runs)
            mean = sum(r[0] for r in runs) / len(runs)
            print(f"oracle tramer-b {oracle_epochs} epochs, {name:<6}: oracle / substitute accuracy per seed {cells}; "
                  f"mean oracle accuracy {mean:.3f}; {runs[0][2]} queries; {time.perf_counter() - start:.0f} s",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
