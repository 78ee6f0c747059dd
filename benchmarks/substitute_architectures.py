"""Papernot et al.'s substitute attack (arXiv:1602.02697), Algorithm 1 as written (no shifted
copies), with the paper's own substitute architecture and training instead of the MLP 200-200.

The setting of ``gibbon reproduce papernot2017-substitute --seed S`` is kept: the oracle is
Tramer et al.'s model B trained 2 epochs with seed S (labels only), the seeds are the first 150
MNIST test images, six augmentations (9,600 labels), lambda 0.1 flipped every 3 rounds (tau),
the gradient of the substitute's probability, FGSM crafted on the substitute for the next 2,000
test images. Variants (the paper's section / table in brackets):

* ``mlp``: the reproduction's MLP 200-200, 10 epochs of Adam 1e-3 a round, training continued
  (CleverHans' tutorial);
* ``mlp-paper``: the same MLP trained as section 4.1 says: 10 epochs "from scratch" each
  substitute epoch, SGD lr 1e-2, momentum 0.9;
* ``a``: substitute architecture A (appendix table 13; section 4.1 uses it against MetaMind),
  trained as ``mlp``; ``a-paper``: A trained as ``mlp-paper`` (the paper's full setting);
  ``a-k2-paper`` / ``a-k5-paper``: the same with 2x2 / 5x5 kernels (the table gives no kernel size);
* ``a-paper-reservoir``: ``a-paper`` with reservoir sampling from round sigma = 3, kappa = 400
  points a round (fewer labels, section 6 / Papernot et al. 2016, arXiv:1605.07277, section 4.1);
* ``a-noflip``: ``a`` with a constant lambda (no periodic sign flip: tau off), as section 4's
  MetaMind run states the step.

Every run also scores FGSM at the other ``--eps`` values from the same substitute (no new
training, no new labels): the paper's figure 4 reports MetaMind's rates over a range of eps.

    .venv/bin/python benchmarks/substitute_architectures.py --variants mlp a a-paper --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

PAPER_TRAINING = {"optimizer": "sgd", "lr": 1e-2, "restart": True}
VARIANTS = {
    "mlp": ("mlp-200-200", {}, {}),
    "mlp-paper": ("mlp-200-200", {}, PAPER_TRAINING),
    "a": ("papernot-a", {}, {}),
    "a-paper": ("papernot-a", {}, PAPER_TRAINING),
    "a-k2-paper": ("papernot-a", {"kernel_size": 2}, PAPER_TRAINING),
    "a-k5-paper": ("papernot-a", {"kernel_size": 5}, PAPER_TRAINING),
    "a-paper-reservoir": ("papernot-a", {}, {**PAPER_TRAINING, "reservoir_from": 3, "reservoir_size": 400}),
    "a-noflip": ("papernot-a", {}, {"flip_every": 0}),
}


def build_substitute(arch: str, arch_kwargs: dict, test, seed: int):
    """The reproduction's seeding (global RNG seeded with ``seed`` inside a fork) for any substitute."""
    from gibbon import zoo
    from gibbon.zoo.architectures import papernot_a

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if arch == "papernot-a":  # not in the zoo's registry (yet): built directly
            return papernot_a(tuple(test.input_shape), test.num_classes, **arch_kwargs)
        return zoo.build(arch, test, **arch_kwargs)


def run(oracle_model, test, seed: int, variant: str, eps_list) -> dict:
    """One as-written substitute attack; the oracle's accuracy at every eps from the same substitute."""
    from gibbon.attacks import FGSM
    from gibbon.oracles import Oracle
    from gibbon.transfer import substitute_attack
    from gibbon.transfer._batches import craft, predicted_labels

    arch, arch_kwargs, training = VARIANTS[variant]
    seeds, x, y = test.x[:150], test.x[150:], test.y[150:]
    start = time.perf_counter()
    result = substitute_attack(Oracle(oracle_model, output="label"), seeds, build_substitute(arch, arch_kwargs, test, seed),
                               x, y, FGSM(), eps=0.3, rounds=6, step=0.1, seed=seed, classes=test.classes, **training)
    seconds = time.perf_counter() - start
    by_eps = {}
    for eps in eps_list:
        adv = craft(result.substitute, FGSM(), x, y, eps=eps, norm="linf", bounds=(0.0, 1.0), batch_size=500, seed=0)
        by_eps[f"{eps:g}"] = float((predicted_labels(oracle_model, adv, 500) == y).float().mean())
    return {"variant": variant, "seed": seed, "oracle_accuracy_eps0.3": result.adversarial_accuracy,
            "oracle_accuracy_by_eps": by_eps, "substitute_accuracy": result.substitute_accuracy,
            "agreement": result.agreement, "oracle_clean_accuracy": result.oracle_accuracy,
            "labels": result.queries, "train_seconds": round(seconds, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=["mlp", "a", "a-paper"], choices=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--oracle-seed", type=int, default=None,
                    help="train every oracle with this seed (default: each run's seed, as the reproduction)")
    ap.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/substitute_architectures.jsonl")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gibbon import data as gdata
    from gibbon import zoo

    test = gdata.load("mnist", "test", n=2150)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        oracle_seed = seed if args.oracle_seed is None else args.oracle_seed
        oracle_model = zoo.load(zoo.trained("tramer-b", "mnist", epochs=2, seed=oracle_seed, progress=False)).eval()
        for variant in args.variants:
            row = {**run(oracle_model, test, seed, variant, args.eps), "oracle_seed": oracle_seed,
                   "threads": args.threads}
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            eps_cells = " ".join(f"{k}:{v:.3f}" for k, v in row["oracle_accuracy_by_eps"].items())
            print(f"seed {seed} {variant:<18s} oracle {row['oracle_accuracy_eps0.3']:.4f} substitute "
                  f"{row['substitute_accuracy']:.4f} labels {row['labels']} {row['train_seconds']:.0f} s | {eps_cells}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
