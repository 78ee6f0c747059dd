"""Gradient-matching poisons (Geiping, Fowl, Huang, Czaja, Taylor, Moeller & Goldstein 2021,
"Witches' Brew: Industrial Scale Data Poisoning via Gradient Matching", arXiv:2009.02276).

The attacker wants a victim trained FROM SCRATCH on the poisoned set to give a target image
``t`` the adversarial label ``y_adv``. Training follows the gradient of the training loss, so the
poisons (training images of class ``y_adv`` with their correct labels: clean label) are perturbed
within an L-inf ball of radius ``eps`` until the parameter gradient they produce points where the
gradient of the target's adversarial loss points, on a model trained on clean data:

    min_delta  1 - cos( grad_theta L(f(t), y_adv),  grad_theta sum_i L(f(x_i + delta_i), y_i) ),

over all parameters, with signed Adam (the sign of the gradient fed to Adam), the step size
dropped tenfold at 3/8, 5/8 and 7/8 of the steps, and restarts keeping the lowest loss.
"""

from __future__ import annotations

import dataclasses
import time

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError, check_bounds
from gibbon.poisoning.clean_label import (CleanLabelResult, check_images, check_positive_int,
                                          perturbation_norms, success_rate, train_from_scratch)
from gibbon.zoo.training import model_device, predict_labels


def _params(model):
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise GibbonInputError("the model has no parameters that require grad; gradient matching aligns parameter "
                               "gradients, so pass a model with trainable parameters")
    return params


def _shift(x: torch.Tensor, g: torch.Generator, pixels: int) -> torch.Tensor:
    """The whole batch translated by one random offset of up to ``pixels`` (zero fill): a differentiable
    augmentation, so that the poisons keep working when the victim's batches are shifted."""
    dy, dx = (int(v) for v in torch.randint(-pixels, pixels + 1, (2,), generator=g))
    padded = F.pad(x, (pixels, pixels, pixels, pixels))
    h, w = x.shape[-2:]
    return padded[..., pixels + dy:pixels + dy + h, pixels + dx:pixels + dx + w]


def alignment_loss(model, poison_x, poison_y, target_grad, params) -> torch.Tensor:
    """``1 - cos(target_grad, grad_theta sum_i CE(f(poison_x_i), poison_y_i))``, differentiable in ``poison_x``."""
    loss = F.cross_entropy(model(poison_x), poison_y, reduction="sum")
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * t).sum() for g, t in zip(grads, target_grad))
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads)) * torch.sqrt(sum((t ** 2).sum() for t in target_grad))
    return 1 - dot / norm.clamp_min(1e-12)


def gradient_alignment(model, poison_x, poison_y, target_x, adversarial_label) -> float:
    """The cosine similarity that :func:`gradient_matching` maximises, for given (perturbed) poisons."""
    device, was_training = model_device(model), model.training
    model.eval()
    try:
        params = _params(model)
        adv = torch.as_tensor(adversarial_label, device=device).long().expand(len(target_x))
        target_grad = torch.autograd.grad(F.cross_entropy(model(target_x.to(device)), adv), params)
        loss = alignment_loss(model, poison_x.to(device), poison_y.to(device), target_grad, params)
    finally:
        model.train(was_training)
    return 1 - float(loss.detach())


def gradient_matching(model: torch.nn.Module, poison_x: torch.Tensor, poison_y: torch.Tensor, target_x: torch.Tensor,
                      adversarial_label, *, eps: float = 16 / 255, steps: int = 250, restarts: int = 1, lr: float = 0.1,
                      bounds=(0.0, 1.0), augment: int = 0, seed: int = 0) -> torch.Tensor:
    """Perturbations ``delta`` (same shape as ``poison_x``, on its device) with ``|delta| <= eps`` and
    ``poison_x + delta`` inside ``bounds``.

    Args:
        model: the crafting model, trained on clean data; left as it was (mode, grads).
        poison_x, poison_y: the images to perturb and their (correct, unchanged) labels.
        target_x: ``(T, C, H, W)`` target image(s); all get ``adversarial_label`` (int or ``(T,)``).
        eps: L-inf radius in input units (the paper's 16/255).
        steps, lr: signed-Adam iterations and initial step, in units of ``eps`` (lr 0.1 moves each
            pixel by about eps / 10 per step at first); the step drops tenfold at 3/8, 5/8, 7/8.
        restarts: independent random starts; the delta with the lowest final alignment loss is kept.
        augment: if > 0, each step sees the poisons shifted by a random offset of up to this many
            pixels (the paper's differentiable augmentation, reduced to translations).
        seed: seeds the random starts and shifts (a private generator).
    """
    poison_x, target_x = check_images(poison_x, "poison_x"), check_images(target_x, "target_x")
    if not isinstance(eps, (int, float)) or not eps >= 0:
        raise GibbonInputError(f"eps must be a number >= 0, got {eps!r}; the paper uses 16/255")
    if not lr > 0:
        raise GibbonInputError(f"lr must be > 0, got {lr!r}")
    if poison_y.shape != (len(poison_x),):
        raise GibbonInputError(f"poison_y must have one label per poison, shape ({len(poison_x)},), got "
                               f"{tuple(poison_y.shape)}")
    if target_x.shape[1:] != poison_x.shape[1:]:
        raise GibbonInputError(f"target_x images {tuple(target_x.shape[1:])} and poison_x images "
                               f"{tuple(poison_x.shape[1:])} must have the same shape")
    steps, restarts = check_positive_int(steps, "steps"), check_positive_int(restarts, "restarts")
    lo, hi = check_bounds(bounds)
    device, out_device, was_training = model_device(model), poison_x.device, model.training
    model.eval()
    try:
        params = _params(model)
        xp, yp = poison_x.detach().to(device).float(), poison_y.to(device).long()
        xt = target_x.detach().to(device).float()
        with torch.no_grad():
            k = model(xt[:1]).shape[-1]
        adv = torch.as_tensor(adversarial_label, device=device).long().flatten().expand(len(xt))
        if bool(((adv < 0) | (adv >= k)).any()) or bool(((yp < 0) | (yp >= k)).any()):
            raise GibbonInputError(f"adversarial_label {adversarial_label!r} and poison_y must be class indices in "
                                   f"[0, {k})")
        target_grad = [g.detach() for g in
                       torch.autograd.grad(F.cross_entropy(model(xt), adv, reduction="sum"), params)]
        g = torch.Generator().manual_seed(int(seed))
        milestones = [round(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        best, best_loss = torch.zeros_like(xp), float("inf")
        for _ in range(restarts):
            # the search runs in units of eps, so that lr means the same at any radius
            u = (torch.rand(xp.shape, generator=g) * 2 - 1).to(device)
            u = (((xp + eps * u).clamp(lo, hi) - xp) / max(eps, 1e-12)).requires_grad_(True)
            opt = torch.optim.Adam([u], lr=lr)
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma=0.1)
            for _ in range(steps):
                x = xp + eps * u
                if augment:
                    x = _shift(x, g, int(augment))
                loss = alignment_loss(model, x, yp, target_grad, params)
                u.grad, = torch.autograd.grad(loss, u)
                u.grad.sign_()
                opt.step()
                sched.step()
                with torch.no_grad():  # project: the eps ball, then the box
                    u.clamp_(-1, 1)
                    u.copy_(((xp + eps * u).clamp(lo, hi) - xp) / max(eps, 1e-12))
            final = float(alignment_loss(model, xp + eps * u.detach(), yp, target_grad, params).detach())
            if final < best_loss:
                best, best_loss = (eps * u.detach()).clone(), final
    finally:
        model.train(was_training)
    return best.to(out_device)


def gradient_matching_experiment(crafting_model: torch.nn.Module, train, test, *, arch: str, victim_epochs: int,
                                 n_targets: int = 10, budget: float = 0.01, eps: float = 16 / 255, steps: int = 250,
                                 restarts: int = 1, lr: float = 0.1, augment: int = 0, victim_seed: int = 1,
                                 baseline: bool = True, seed: int = 0,
                                 ) -> tuple[CleanLabelResult, CleanLabelResult | None]:
    """Witches' Brew over ``n_targets`` targets, each with its own poisons and its own victim.

    Per target (a random test image the crafting model classifies correctly) the adversarial label
    is a random other class; ``round(budget * len(train))`` random training images of that class
    get gradient-matching perturbations on ``crafting_model`` (trained on the clean ``train``); a
    fresh ``arch`` initialised with ``victim_seed`` (not the crafting model's seed) is trained from
    scratch for ``victim_epochs`` on the poisoned set (:func:`train_from_scratch`). Success: the
    victim labels the target adversarially. With ``baseline``, the same rows get uniform random
    noise of the same radius instead and another victim (same seed) is trained: the control.

    Returns ``(attack result, baseline result or None)``.
    """
    from gibbon.poisoning.backdoor import check_rate

    budget = check_rate(budget, "poison budget")
    n_targets = check_positive_int(n_targets, "n_targets")
    n_poison = max(1, round(budget * len(train.y)))
    k, start = train.num_classes, time.perf_counter()
    g = torch.Generator().manual_seed(int(seed))
    correct = (predict_labels(crafting_model, test.x) == test.y).nonzero().flatten()
    targets = correct[torch.randperm(len(correct), generator=g)[:n_targets]]
    records = {"gradient-matching": [], "random-noise": []}
    for t in targets.tolist():
        adv = int((test.y[t] + torch.randint(1, k, (1,), generator=g)) % k)
        pool = (train.y == adv).nonzero().flatten()
        if len(pool) < n_poison:
            raise GibbonInputError(f"budget {budget} needs {n_poison} training images of class {adv}, only "
                                   f"{len(pool)} there; lower the budget")
        rows = pool[torch.randperm(len(pool), generator=g)[:n_poison]]
        crafted = time.perf_counter()
        delta = gradient_matching(crafting_model, train.x[rows], train.y[rows], test.x[t:t + 1], adv, eps=eps,
                                  steps=steps, restarts=restarts, lr=lr, bounds=train.bounds, augment=augment,
                                  seed=int(torch.randint(0, 2 ** 31, (1,), generator=g)))
        craft_seconds = time.perf_counter() - crafted
        noise = ((train.x[rows] + eps * (torch.rand(train.x[rows].shape, generator=g) * 2 - 1)).clamp(*train.bounds)
                 - train.x[rows])
        for name, d in (("gradient-matching", delta), ("random-noise", noise)):
            if name == "random-noise" and not baseline:
                continue
            x = train.x.clone()
            x[rows] = (train.x[rows] + d).clamp(*train.bounds)
            victim = train_from_scratch(arch, dataclasses.replace(train, x=x, meta={}), epochs=victim_epochs,
                                        seed=victim_seed)
            pred = predict_labels(victim, test.x)
            records[name].append({"target": t, "adv": adv, "pred": int(pred[t]),
                                  "acc": float((pred == test.y).float().mean()),
                                  "norms": perturbation_norms(x[rows], train.x[rows]), "craft": craft_seconds})
    clean_acc = float((predict_labels(crafting_model, test.x) == test.y).float().mean())
    setting = {"arch": arch, "n_train": len(train.y), "n_poison": n_poison, "budget": budget, "eps": eps,
               "steps": steps, "restarts": restarts, "lr": lr, "augment": augment, "victim_epochs": victim_epochs,
               "victim_seed": victim_seed, "seed": int(seed)}
    seconds = time.perf_counter() - start
    out = []
    for name, rec in records.items():
        if not rec:
            out.append(None)
            continue
        rate, hits = success_rate(torch.tensor([r["pred"] for r in rec]), torch.tensor([r["adv"] for r in rec]))
        out.append(CleanLabelResult(
            attack=name, success_rate=rate, successes=hits, target_indices=[r["target"] for r in rec],
            attacker_labels=[r["adv"] for r in rec], clean_accuracy=clean_acc,
            poisoned_accuracy=sum(r["acc"] for r in rec) / len(rec), l2=sum(r["norms"][0] for r in rec) / len(rec),
            linf=sum(r["norms"][1] for r in rec) / len(rec), seconds=seconds,
            setting={**setting, "mean_craft_seconds": sum(r["craft"] for r in rec) / len(rec)}))
    return out[0], out[1]
