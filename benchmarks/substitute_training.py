"""Papernot et al.'s substitute attack (arXiv:1602.02697) on MNIST: how the substitute is trained.

The issue's setting stays fixed: MLP 200-200 substitute, the first 150 test images as seeds, six
Jacobian augmentations (9,600 oracle labels, lambda 0.1 flipped every 3 rounds), labels only,
FGSM eps 0.3 crafted on the substitute for the next 2,000 test images. Only what the adversary
does with its 9,600 labelled points changes. Each variant trains the substitute from several
seeds against each oracle (``ARCH:EPOCHS`` of the zoo, trained with seed 0) and prints, per seed,
the oracle's accuracy on the transferred examples / the substitute's test accuracy, then means.

Variants (``base`` is Algorithm 1 as the reproduction runs it: 10 epochs of Adam at 1e-3, batch
128 per round, training continued across rounds):

* training length and noise of the optimiser: ``epochs3|5|20|40``, ``batch32|512``, ``lr3e-4``;
* regularisers: ``dropout0.3|0.5`` (after each hidden layer);
* smoother substitutes: cross-entropy at ``x + sigma * N(0, I)`` (``gauss0.1`` .. ``gauss0.5``),
  at ``x`` plus random signs or uniform noise of size 0.3 (``signs0.3``, ``uniform0.3``), half
  the loss at FGSM or R+FGSM points of the substitute itself (``fgsm-at0.05|0.1|0.2``,
  ``rfgsm-at0.1``: the "slightly robust source" idea of Springer, Mitchell & Kenyon 2021,
  arXiv:2106.02105), all clipped into the box;
* label-preserving translations, the library's ``shift=`` (``shift1|2|3``);
* the attack's labels: FGSM away from the substitute's own prediction instead of the true
  label (``predicted-labels``).

The noise and adversarial objectives reach ``train_substitute`` by wrapping ``gibbon.zoo.fit``,
which it calls once per round; this keeps them out of the library until one earns its place.

    .venv/bin/python benchmarks/substitute_training.py --oracles tramer-b:2 --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/substitute_training.py --oracles lenet5:5 madry-cnn:2 --variants base shift2 \\
        --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def _clipped_noise_objective(draw):
    def objective(model, x, y):
        logits = model((x + draw(x)).clamp(0.0, 1.0))
        return F.cross_entropy(logits, y), logits
    return objective


def _fgsm_point(model, x, y, eps):
    x_var = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_var), y), x_var)
    return (x + eps * grad.sign()).clamp(0.0, 1.0).detach()


def _adversarial_objective(eps, random_start: bool):
    """Half clean, half adversarial cross-entropy (Goodfellow et al. 2015's mix; R+FGSM: Tramer et al. 2018)."""
    def objective(model, x, y):
        start = (x + eps / 2 * torch.randn_like(x).sign()).clamp(0.0, 1.0) if random_start else x
        x_adv = _fgsm_point(model, start, y, eps / 2 if random_start else eps)
        logits = model(x)
        return 0.5 * F.cross_entropy(logits, y) + 0.5 * F.cross_entropy(model(x_adv), y), logits
    return objective


VARIANTS = {
    "base": {},
    **{f"epochs{e}": {"epochs": e} for e in (3, 5, 20, 40)},
    **{f"batch{b}": {"batch_size": b} for b in (32, 512)},
    "lr3e-4": {"lr": 3e-4},
    **{f"dropout{p}": {"_dropout": p} for p in (0.3, 0.5)},
    **{f"gauss{s}": {"_objective": _clipped_noise_objective(lambda x, s=s: s * torch.randn_like(x))}
       for s in (0.1, 0.2, 0.3, 0.4, 0.5)},
    "signs0.3": {"_objective": _clipped_noise_objective(lambda x: 0.3 * torch.randn_like(x).sign())},
    "uniform0.3": {"_objective": _clipped_noise_objective(lambda x: 0.3 * (2 * torch.rand_like(x) - 1))},
    **{f"fgsm-at{e}": {"_objective": _adversarial_objective(e, False)} for e in (0.05, 0.1, 0.2)},
    "rfgsm-at0.1": {"_objective": _adversarial_objective(0.1, True)},
    **{f"shift{s}": {"shift": s} for s in (1, 2, 3)},
    "predicted-labels": {"_predicted_labels": True},
}


def _substitute(seed: int, dropout: float | None):
    from gibbon import zoo

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if dropout is None:
            return zoo.build("mlp-200-200", "mnist")
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 200), torch.nn.ReLU(),
                                   torch.nn.Dropout(dropout), torch.nn.Linear(200, 200), torch.nn.ReLU(),
                                   torch.nn.Dropout(dropout), torch.nn.Linear(200, 10))


class _FGSMFromPrediction:
    """FGSM away from the substitute's own label, as attacks without the true labels do."""

    def __call__(self, model, x, y, **kwargs):
        from gibbon.attacks import FGSM

        with torch.no_grad():
            predicted = model(x).argmax(1)
        return FGSM()(model, x, predicted, **kwargs)


def run_variant(target, test, seed: int, options: dict):
    """One substitute attack under ``options``; returns the :class:`SubstituteResult`."""
    from gibbon import zoo
    from gibbon.attacks import FGSM
    from gibbon.oracles import Oracle
    from gibbon.transfer import substitute_attack

    options = dict(options)
    dropout, variant_objective = options.pop("_dropout", None), options.pop("_objective", None)
    attack = _FGSMFromPrediction() if options.pop("_predicted_labels", False) else FGSM()
    plain_fit = zoo.fit
    if variant_objective is not None:
        def fit_with_variant(*args, objective=None, **kwargs):  # None unless train_substitute shifts
            return plain_fit(*args, objective=objective or variant_objective, **kwargs)

        zoo.fit = fit_with_variant
    try:
        return substitute_attack(Oracle(target, output="label"), test.x[:150], _substitute(seed, dropout),
                                 test.x[150:], test.y[150:], attack, eps=0.3, rounds=6, step=0.1, seed=seed,
                                 classes=test.classes, **options)
    finally:
        zoo.fit = plain_fit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--oracles", nargs="+", default=["tramer-b:2"], help="ARCH:EPOCHS of the zoo's MNIST models")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from gibbon import data as gdata
    from gibbon import zoo

    test = gdata.load("mnist", "test", n=2150)
    for spec in args.oracles:
        arch, epochs = spec.split(":")
        target = zoo.load(zoo.trained(arch, "mnist", epochs=int(epochs), seed=0, progress=False)).eval()
        for name in args.variants:
            start = time.perf_counter()
            runs = [run_variant(target, test, seed, VARIANTS[name]) for seed in args.seeds]
            cells = "  ".join(f"{r.adversarial_accuracy:.3f}/{r.substitute_accuracy:.3f}" for r in runs)
            mean = sum(r.adversarial_accuracy for r in runs) / len(runs)
            sub = sum(r.substitute_accuracy for r in runs) / len(runs)
            print(f"{spec} {name:<16s} oracle/substitute accuracy per seed {cells}; mean {mean:.3f} / {sub:.3f}; "
                  f"{runs[0].queries} labels; {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
