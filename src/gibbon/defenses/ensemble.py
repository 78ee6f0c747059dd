"""Ensemble adversarial training (Tramer, Kurakin, Papernot, Goodfellow, Boneh & McDaniel 2018,
"Ensemble Adversarial Training: Attacks and Defenses", arXiv:1705.07204).

Threat model: black-box transfer attacks at L-infinity ``eps``. FGSM-only adversarial training
learns to *mask* its own single-step gradient (a "degenerate global minimum"): white-box FGSM
looks weak while FGSM from another model, or R+FGSM, still works. Ensemble adversarial
training decouples the examples from the model being trained: each batch's adversarial half
is crafted (FGSM) on the current model or on one of several static, separately pre-trained
models, so the model also learns the perturbations other models find. The source is drawn
uniformly at random per batch from the global RNG (which :func:`gibbon.zoo.fit` seeds and
checkpoints, so a resumed run draws the same sources); the paper alternates them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.defenses._inner import check_craft_labels, clean_and_adversarial_loss, crafting_loss, fgsm_example
from gibbon.defenses.registry import DefenseConfig, register


def ensemble_training_objective(static_models, eps: float, clean_weight: float = 0.5, bounds=(0.0, 1.0),
                                craft_labels: str = "true"):
    """Ensemble adversarial training's loss: ``a * CE(x) + (1 - a) * CE(x_fgsm)`` where ``x_fgsm``
    comes from the trained model or one static model, chosen at random per batch.

    Args:
        static_models: pre-trained models (any callables ``x -> logits`` in eval mode); their
            weights are never updated.
        eps: FGSM radius (0.3 on MNIST). clean_weight: ``a`` (0.5, half clean, half adversarial).
        bounds: input box.
        craft_labels: ``"true"`` or ``"predicted"`` (each crafting model's own predictions, as
            in Tramer et al.'s code; avoids label leaking).

    Returns:
        ``objective(model, x, y) -> (loss, clean_logits)``.

    Example:
        >>> static = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)) for _ in range(2)]
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> loss, _ = ensemble_training_objective(static, 0.1)(model, torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> loss.requires_grad
        True

    References:
        Tramer et al. (2018), arXiv:1705.07204, section 3.3 and appendix (MNIST).
    """
    static_models = list(static_models)
    if not static_models:
        raise GibbonInputError("ensemble: give at least one static pre-trained model (static=tramer-c+tramer-d)")
    if not eps > 0:
        raise GibbonInputError(f"ensemble: eps must be > 0, got {eps!r}")
    check_craft_labels(craft_labels, "ensemble")

    def objective(model, x, y):
        source = int(torch.randint(len(static_models) + 1, (1,)))
        crafter = model if source == 0 else static_models[source - 1]
        x_adv = fgsm_example(crafter, x, y, eps, bounds, crafting_loss(craft_labels))
        return clean_and_adversarial_loss(model, x, x_adv, y, clean_weight)

    objective.__qualname__ = (f"ensemble_training_objective(n_static={len(static_models)}, eps={eps}, "
                              f"clean_weight={clean_weight}, craft_labels={craft_labels})")
    return objective


def resolve_static(names: str, dataset_name: str, *, epochs: int, seed: int, device="cpu") -> list:
    """``"tramer-a+tramer-c"`` -> the zoo models (trained once, cached) or ``.safetensors`` paths, in eval mode."""
    from gibbon import zoo

    models = []
    for name in filter(None, (part.strip() for part in names.split("+"))):
        if name.endswith(".safetensors"):
            model = zoo.load(name, device=device)
        else:
            model = zoo.load(zoo.trained(name, dataset_name, epochs=epochs, seed=seed, progress=False), device=device)
        for p in model.parameters():
            p.requires_grad_(False)
        models.append(model.eval())
    return models


@register("ensemble")
@dataclass(frozen=True)
class EnsembleTraining(DefenseConfig):
    """``--defense ensemble:eps=0.3,static=tramer-a+tramer-c+tramer-d`` (Tramer et al. 2018).

    ``static`` names zoo architectures (trained on the same dataset for ``static_epochs`` with
    ``static_seed``, cached) or ``.safetensors`` files, joined by ``+``.
    """

    paper = "Tramer, Kurakin, Papernot, Goodfellow, Boneh & McDaniel 2018, arXiv:1705.07204"
    eps: float = 0.3
    static: str = "tramer-a+tramer-c+tramer-d"
    static_epochs: int = 2
    static_seed: int = 1
    clean_weight: float = 0.5
    craft_labels: str = "true"

    def objective(self, train, device="cpu"):
        static = resolve_static(self.static, train.name, epochs=self.static_epochs, seed=self.static_seed,
                                device=device)
        return ensemble_training_objective(static, self.eps, self.clean_weight, bounds=train.bounds,
                                           craft_labels=self.craft_labels)

    def fit(self, model, train, **fit_kwargs):
        from gibbon.zoo.training import fit, model_device

        # the static models go where fit sends the batches
        device = fit_kwargs.get("device") or model_device(model)
        return fit(model, train, objective=self.objective(train, device=device), **fit_kwargs)
