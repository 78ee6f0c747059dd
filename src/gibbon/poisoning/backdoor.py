"""BadNets-style backdoors (Gu, Dolan-Gavitt & Garg 2017, arXiv:1708.06733): stamp a trigger on a
fraction of the training images and relabel them to the attacker's target class; a model trained
on the result keeps its clean accuracy and answers the target class whenever the trigger is there.

The attack is all-to-one: poisons are drawn from the images whose true label is not the target,
and the attack success rate (ASR) is measured on test images whose true label is not the target
(a target-class image that is "classified as the target" proves nothing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.poisoning.triggers import Trigger, apply_trigger, check_trigger


@dataclass(frozen=True)
class PoisonedSet:
    """A training set with poisons in it, and which rows they are.

    Attributes:
        dataset: the poisoned :class:`~gibbon.data.dataset.Dataset` (same size as the clean one).
        poison_indices: int64 rows that were changed.
        original_labels: those rows' labels before poisoning.
        meta: how it was made (attack, rate, target, trigger), for cards and JSON.
    """

    dataset: object
    poison_indices: torch.Tensor
    original_labels: torch.Tensor
    meta: dict

    @property
    def poison_mask(self) -> torch.Tensor:
        mask = torch.zeros(len(self.dataset.y), dtype=torch.bool)
        mask[self.poison_indices] = True
        return mask


def check_rate(rate: float, what: str = "poison rate") -> float:
    if not isinstance(rate, (int, float)) or not 0 < float(rate) <= 1:
        raise GibbonInputError(f"{what} must be a fraction in (0, 1], got {rate!r}; e.g. 0.01 for 1% of the "
                               "training set")
    return float(rate)


def check_target_label(target: int, num_classes: int) -> int:
    if int(target) != target or not 0 <= int(target) < num_classes:
        raise GibbonInputError(f"target label must be a class index in [0, {num_classes}), got {target!r}")
    return int(target)


def poison_count(rate: float, n: int) -> int:
    """Rows a rate poisons: ``round(rate * n)``, at least one."""
    return max(1, round(check_rate(rate) * n))


def badnets_poison(train, trigger: Trigger, target: int, rate: float, *, seed: int = 0) -> PoisonedSet:
    """Poison ``round(rate * len(train))`` random non-target training images: trigger on, label ``target``.

    Raises:
        GibbonInputError: rate outside (0, 1], target out of range, a trigger that does not fit,
            or more poisons asked for than there are non-target images.
    """
    n = len(train.y)
    target = check_target_label(target, train.num_classes)
    check_trigger(trigger, train.input_shape)
    count = poison_count(rate, n)
    candidates = (train.y != target).nonzero().flatten()
    if count > len(candidates):
        raise GibbonInputError(f"rate {rate} asks for {count} poisons but only {len(candidates)} training images are "
                               f"outside the target class {target}; lower the rate")
    g = torch.Generator().manual_seed(int(seed))
    rows = candidates[torch.randperm(len(candidates), generator=g)[:count]].sort().values
    x, y = train.x.clone(), train.y.clone()
    x[rows] = apply_trigger(train.x[rows], trigger, train.bounds)
    y[rows] = target
    meta = {"attack": "badnets", "rate": float(rate), "count": count, "target": target, "seed": int(seed),
            "trigger": trigger.to_dict()}
    poisoned = dataclasses.replace(train, x=x, y=y, meta={**train.meta, "poisoning": meta})
    return PoisonedSet(poisoned, rows, train.y[rows].clone(), meta)


def attack_success_rate(model, test, trigger: Trigger, target: int, *, batch_size: int = 500) -> float:
    """Fraction of non-target test images the model assigns to ``target`` once the trigger is stamped."""
    from gibbon.zoo.training import predict_labels

    target = check_target_label(target, test.num_classes)
    keep = test.y != target
    if not bool(keep.any()):
        raise GibbonInputError(f"every test image is of the target class {target}; the ASR needs other classes")
    stamped = apply_trigger(test.x[keep], trigger, test.bounds)
    return float((predict_labels(model, stamped, batch_size=batch_size) == target).double().mean())
