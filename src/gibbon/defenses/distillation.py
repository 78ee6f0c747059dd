"""Defensive distillation (Papernot, McDaniel, Wu, Jha & Swami 2016, "Distillation as a Defense
to Adversarial Perturbations against Deep Neural Networks", arXiv:1511.04508).

A teacher is trained with its softmax at temperature ``T`` (``softmax(z / T)``); a student of
the same architecture is then trained at the same temperature on the teacher's soft labels
``softmax(z_teacher(x) / T)``. The deployed student runs at temperature 1, as in the paper:
its raw logits are served as they are, nothing divides them back by ``T``. Those logits are
about ``T`` times larger than a normally trained network's, so the softmax saturates and the
cross-entropy gradient underflows to zero in float32: FGSM and JSMA "fail", while an attack on
the logits' margin (Carlini & Wagner 2017, arXiv:1608.04644) still succeeds. It is the textbook
case of **gradient masking** -- the model is no more robust, its gradient is just useless.

Threat model of the claim: white-box gradient attacks (JSMA, FGSM) at the paper's budgets.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError
from gibbon.defenses.registry import DefenseConfig, register


def temperature_objective(temperature: float):
    """Cross-entropy of ``softmax(logits / T)`` against the labels: how the teacher is trained.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> loss, _ = temperature_objective(100.0)(model, torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> loss.shape
        torch.Size([])
    """
    def objective(model, x, y):
        logits = model(x)
        return F.cross_entropy(logits / temperature, y), logits

    objective.__qualname__ = f"temperature_objective(T={temperature})"
    return objective


def distillation_objective(teacher: torch.nn.Module, temperature: float):
    """Cross-entropy between the student's and the (frozen, eval-mode) teacher's softmax at ``T``.

    The soft labels are recomputed per batch (one extra forward pass) instead of stored, so any
    training loop and any data order work. The labels ``y`` are not used.
    """
    def objective(model, x, y):
        with torch.no_grad():
            soft = F.softmax(teacher(x) / temperature, dim=1)
        logits = model(x)
        return -(soft * F.log_softmax(logits / temperature, dim=1)).sum(dim=1).mean(), logits

    objective.__qualname__ = f"distillation_objective(T={temperature})"
    return objective


@register("distill")
@dataclass(frozen=True)
class DefensiveDistillation(DefenseConfig):
    """``--defense distill:temperature=100``: teacher at ``T``, then the student on its soft labels.

    The teacher starts from a copy of the model's initial weights and is trained with the same
    fit settings (epochs, lr, seed, ...); its checkpoints go to ``checkpoint_dir/teacher``.
    The returned history is the teacher's epochs followed by the student's, each with a
    ``stage`` field.
    """

    paper = "Papernot, McDaniel, Wu, Jha & Swami 2016, arXiv:1511.04508"
    temperature: float = 100.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise GibbonInputError(f"distill: temperature must be > 0, got {self.temperature!r} (the paper uses 100)")

    def fit(self, model, train, **fit_kwargs):
        from gibbon.zoo.training import fit

        teacher = copy.deepcopy(model)
        ckpt = fit_kwargs.pop("checkpoint_dir", None)
        sub = (lambda name: None) if ckpt is None else (lambda name: Path(ckpt) / name)
        first = fit(teacher, train, objective=temperature_objective(self.temperature), checkpoint_dir=sub("teacher"),
                    **fit_kwargs)
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        second = fit(model, train, objective=distillation_objective(teacher, self.temperature),
                     checkpoint_dir=sub("student"), **fit_kwargs)
        second.history = ([{**h, "stage": "teacher"} for h in first.history]
                          + [{**h, "stage": "student"} for h in second.history])
        return second

    def card(self) -> dict:
        return {**super().card(), "deployed": "student logits at temperature 1 (as in the paper: not divided by T)"}
