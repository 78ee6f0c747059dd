"""Label flipping: the simplest poisoning, changing labels and nothing else (Biggio, Nelson &
Laskov 2012, "Poisoning Attacks against Support Vector Machines", arXiv:1206.6389, study it as the
baseline; Xiao et al. 2015 "Is Feature Selection Secure against Training Data Poisoning?" and
Steinhardt, Koh & Liang 2017 "Certified Defenses for Data Poisoning Attacks", arXiv:1706.03691,
measure accuracy against flip rate).

* random: a fraction of all training labels moved to a uniformly random *other* class;
* targeted: a fraction of one source class's labels moved to a chosen target class, which hurts
  that class's test accuracy far more than the same number of random flips.
"""

from __future__ import annotations

import dataclasses

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.poisoning.backdoor import PoisonedSet, check_rate, check_target_label

MODES = ("random", "targeted")


def flip_labels(train, rate: float, *, mode: str = "random", source: int | None = None, target: int | None = None,
                seed: int = 0) -> PoisonedSet:
    """Flip ``rate`` of the labels (``random``: of all rows; ``targeted``: of the ``source`` class's rows).

    Returns a :class:`~gibbon.poisoning.backdoor.PoisonedSet` whose ``poison_indices`` are the
    flipped rows; the images are untouched.
    """
    rate = check_rate(rate, "flip rate")
    k = train.num_classes
    g = torch.Generator().manual_seed(int(seed))
    y = train.y.clone()
    if mode == "random":
        if source is not None or target is not None:
            raise GibbonInputError("random label flipping takes no source/target; use mode='targeted' for those")
        rows = torch.randperm(len(y), generator=g)[:max(1, round(rate * len(y)))]
        # a shift of 1..k-1 classes: uniform over the other classes, never the true one
        y[rows] = (y[rows] + torch.randint(1, k, (len(rows),), generator=g)) % k
    elif mode == "targeted":
        if source is None or target is None:
            raise GibbonInputError("targeted label flipping needs source and target classes, e.g. source=7, target=1")
        source, target = check_target_label(source, k), check_target_label(target, k)
        if source == target:
            raise GibbonInputError(f"source and target must differ, both are {source}")
        pool = (y == source).nonzero().flatten()
        if len(pool) == 0:
            raise GibbonInputError(f"the training set has no image of the source class {source}")
        rows = pool[torch.randperm(len(pool), generator=g)[:max(1, round(rate * len(pool)))]]
        y[rows] = target
    else:
        raise GibbonInputError(f"flip mode must be one of {', '.join(MODES)}, got {mode!r}")
    rows = rows.sort().values
    meta = {"attack": "label-flip", "mode": mode, "rate": rate, "count": len(rows), "source": source,
            "target": target, "seed": int(seed)}
    poisoned = dataclasses.replace(train, y=y, meta={**train.meta, "poisoning": meta})
    return PoisonedSet(poisoned, rows, train.y[rows].clone(), meta)


def class_accuracy(model, test, label: int, *, batch_size: int = 500) -> float:
    """Accuracy on the test images of one class (the targeted flip's victim)."""
    from gibbon.zoo.training import predict_labels

    keep = test.y == label
    if not bool(keep.any()):
        raise GibbonInputError(f"the test set has no image of class {label}")
    return float((predict_labels(model, test.x[keep], batch_size=batch_size) == label).double().mean())
