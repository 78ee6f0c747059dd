"""Transferability matrices across models and learning techniques (Papernot, McDaniel & Goodfellow
2016, "Transferability in Machine Learning: from Phenomena to Black-Box Attacks using Adversarial
Samples", arXiv:1605.07277, section 3).

Threat model: black-box *transfer*. Adversarial examples are crafted with a white-box attack on
each source and sent to each target, which is seen only through its predictions (an
:class:`~gibbon.oracles.Oracle`, so every query is counted and no gradient is ever asked). Any
mix of zoo networks, scikit-learn techniques and ONNX models can be a target. A source must be
differentiable; a black-box source (a scikit-learn model, say) is replaced by a substitute
trained from its labels (:func:`gibbon.transfer.train_substitute`), as the paper does for its
non-differentiable techniques' black-box versions.

Cell ``(source, target)``: the fraction of the images the target classifies correctly whose
adversarial version, crafted on the source, it misclassifies (the paper's transfer rate).

Each target also gets a *noise floor*: the same rate for a random perturbation of the attack's
size (random signs at eps for L-inf, a random direction of length eps for L2), with no attack at
all. A cell means transfer only by how far it rises above its target's floor: at eps 0.3 on
MNIST, random signs alone fool linear models and trees on about 70% of their images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import get_norm
from gibbon.oracles import Oracle
from gibbon.transfer._batches import craft, fooled_rate, predicted_labels


@dataclass
class TransferMatrix:
    """Transfer rates ``rates[source][target]`` and what they cost (:func:`transfer_matrix`)."""

    sources: list
    targets: list
    rates: dict  # source -> target -> transfer rate
    clean_accuracy: dict  # target -> accuracy on the clean images
    queries: dict  # target -> rows sent to it
    substitutes: dict = field(default_factory=dict)  # black-box source -> {arch, queries, agreement, shift}
    settings: dict = field(default_factory=dict)
    noise_floor: dict = field(default_factory=dict)  # target -> rate of a random perturbation of size eps

    def table(self) -> str:
        """The matrix as a Markdown table (rows: sources, columns: targets)."""
        head = "| source \\ target | " + " | ".join(self.targets) + " |"
        rule = "|---|" + "---|" * len(self.targets)
        rows = [f"| {s} | " + " | ".join(f"{self.rates[s][t]:.1%}" for t in self.targets) + " |" for s in self.sources]
        clean = "| (clean accuracy) | " + " | ".join(f"{self.clean_accuracy[t]:.1%}" for t in self.targets) + " |"
        floor = ["| (random noise of size eps, no attack) | "
                 + " | ".join(f"{self.noise_floor[t]:.1%}" for t in self.targets) + " |"] if self.noise_floor else []
        return "\n".join([head, rule, *rows, clean, *floor])

    def to_dict(self) -> dict:
        return {"sources": self.sources, "targets": self.targets, "rates": self.rates,
                "clean_accuracy": self.clean_accuracy, "noise_floor": self.noise_floor, "queries": self.queries,
                "substitutes": self.substitutes, "settings": self.settings}

    def to_json(self, path) -> None:
        from gibbon.zoo.io import write_json

        write_json(Path(path), json.loads(json.dumps(self.to_dict(), default=float)))


def random_perturbation(x: torch.Tensor, eps: float, norm: str, *, bounds=(0.0, 1.0),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` moved to a random extreme point of its eps-ball, clipped into ``bounds``: the size of
    perturbation a one-step attack makes, in a direction that knows nothing of the model.

    L-inf: random signs (``eps * sign(g)``); L2: a random direction of length eps; L1: eps on one
    random feature (the steepest-ascent step of a random gradient ``g``, as FGM takes for the
    true one); L0: ``floor(eps)`` random features moved by uniform amounts.
    """
    threat = get_norm(norm)
    if threat.name == "l0":
        return (x + threat.sample(x, eps, generator)).clamp(*bounds)
    g = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    return (x + eps * threat.ascent(g).to(x.device)).clamp(*bounds)


def _differentiable(source) -> bool:
    return isinstance(source, nn.Module) and not isinstance(source, Oracle) and any(
        p.is_floating_point() for p in source.parameters())


def transfer_matrix(sources: dict, targets: dict, attack, x: torch.Tensor, y: torch.Tensor, *, eps: float,
                    norm: str = "linf", bounds=(0.0, 1.0), batch_size: int = 250, seed: int = 0,
                    substitute_seed_x: torch.Tensor | None = None, substitute_arch: str = "mlp-200-200",
                    substitute_rounds: int = 5, substitute_epochs: int = 10,
                    substitute_shift: int = 0) -> TransferMatrix:
    """Transfer rate of ``attack`` from every source to every target.

    Args:
        sources: name -> model. Differentiable torch models are attacked directly; any other
            (scikit-learn, ONNX, an Oracle) through a substitute trained from its labels.
        targets: name -> model or callable ``x -> scores``; only predictions are used.
        attack: a white-box attack ``attack(model, x, y, eps=, norm=, bounds=, generator=)``.
        x, y: images attacked and their true labels. eps, norm: the attack's budget.
        substitute_seed_x: the seed images of the substitutes (needed iff a source is a black
            box; keep them apart from ``x``). substitute_arch, substitute_rounds (5: 32 times
            the seeds, 4,800 labels from 150), substitute_epochs, substitute_shift (its ``shift``:
            0, Algorithm 1 as written): as :func:`gibbon.transfer.train_substitute`.

    Returns:
        :class:`TransferMatrix`, with each target's noise floor (:func:`random_perturbation` at
        eps, seeded with ``seed``): a cell is worth its rise above that floor.

    Example:
        >>> from gibbon.attacks import FGSM
        >>> a = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> b = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> x = torch.rand(8, 1, 2, 2)
        >>> m = transfer_matrix({"a": a}, {"a": a, "b": b}, FGSM(), x, a(x).argmax(1), eps=0.5)
        >>> sorted(m.rates["a"])
        ['a', 'b']
    """
    from gibbon import zoo
    from gibbon.data import Dataset
    from gibbon.data.augment import check_shift
    from gibbon.transfer.substitute import train_substitute

    if not sources or not targets:
        raise GibbonInputError("transfer_matrix needs at least one source and one target")
    if not eps >= 0:
        raise GibbonInputError(f"eps must be >= 0 (the attack's budget), got {eps!r}")
    try:
        norm = get_norm(norm).name
    except ValueError as err:
        raise GibbonInputError(str(err)) from None
    check_shift(substitute_shift)
    oracles = {name: model if isinstance(model, Oracle) else Oracle(model) for name, model in targets.items()}
    correct = {name: predicted_labels(o, x, batch_size) == y for name, o in oracles.items()}
    noisy = random_perturbation(x, eps, norm, bounds=bounds, generator=torch.Generator().manual_seed(seed))
    noise_floor = {name: fooled_rate(predicted_labels(o, noisy, batch_size), y, correct[name])
                   for name, o in oracles.items()}
    rates, substitutes = {}, {}
    for name, source in sources.items():
        if not _differentiable(source):
            if substitute_seed_x is None:
                raise GibbonInputError(f"source {name!r} is a black box: pass substitute_seed_x= (seed images, apart "
                                       "from x) so a substitute can be trained from its labels")
            like = Dataset("substitute", "train", substitute_seed_x, torch.zeros(len(substitute_seed_x), dtype=torch.long),
                           tuple(str(i) for i in range(int(_num_classes(oracles, x)))), tuple(bounds))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = zoo.build(substitute_arch, like)
            trained = train_substitute(source, substitute_seed_x, model, rounds=substitute_rounds,
                                       epochs=substitute_epochs, shift=substitute_shift, bounds=bounds,
                                       classes=like.classes, seed=seed)
            agree = float((predicted_labels(trained.substitute, x, batch_size)
                           == predicted_labels(Oracle(source), x, batch_size)).float().mean())
            substitutes[name] = {"arch": substitute_arch, "queries": trained.queries, "agreement": agree,
                                 "shift": substitute_shift}
            source = trained.substitute
        source = source.eval()
        adv = craft(source, attack, x, y, eps=eps, norm=norm, bounds=bounds, batch_size=batch_size, seed=seed)
        rates[name] = {target: fooled_rate(predicted_labels(oracle, adv, batch_size), y, correct[target])
                       for target, oracle in oracles.items()}
    return TransferMatrix(list(sources), list(targets), rates,
                          {t: float(c.float().mean()) for t, c in correct.items()},
                          {t: o.total for t, o in oracles.items()}, substitutes,
                          {"eps": eps, "norm": norm, "n": len(x), "seed": seed}, noise_floor)



def _num_classes(oracles: dict, x: torch.Tensor) -> int:
    with torch.no_grad():
        scores = next(iter(oracles.values())).model(x[:1])
    return int(scores.shape[1])
