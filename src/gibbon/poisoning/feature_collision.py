"""Feature-collision poisons (Shafahi, Huang, Najibi, Suciu, Studer, Dumitras & Goldstein 2018,
"Poison Frogs! Targeted Clean-Label Poisoning Attacks on Neural Networks", arXiv:1804.00792).

A poison ``p`` looks like a base image ``b`` (and keeps the base's correct label) but sits on the
target ``t`` in the feature space of a frozen extractor ``f``:

    p = argmin_x ||f(x) - f(t)||^2 + beta ||x - b||^2,

solved with their Algorithm 1, forward-backward splitting: a gradient step on the feature term,
then the proximal step of the distance term, ``x = (x_hat + lr beta b) / (1 + lr beta)``. A linear
head retrained on the poisoned set learns the poison's features as the base class, and with them
the target's. ``beta = beta0 * D_feat^2 / D_input^2`` as in the paper (their 2048-d InceptionV3
features, beta0 = 0.25).
"""

from __future__ import annotations

import time

import torch

from gibbon.core.checks import GibbonInputError, check_bounds
from gibbon.poisoning.clean_label import (CleanLabelResult, check_images, check_positive_int,
                                          head_predict, perturbation_norms, success_rate, train_linear_heads)
from gibbon.poisoning.features import penultimate, penultimate_features
from gibbon.zoo.training import model_device


def collision_beta(beta0: float, feature_dim: int, input_dim: int) -> float:
    """The paper's scaling of the proximity weight: ``beta0 * feature_dim^2 / input_dim^2``."""
    return float(beta0) * feature_dim ** 2 / input_dim ** 2


def feature_collision(extractor: torch.nn.Module, base_x: torch.Tensor, target_x: torch.Tensor, *,
                      beta0: float = 0.25, steps: int = 1000, lr: float = 0.05, bounds=(0.0, 1.0),
                      opacity: float = 0.0, decay_every: int = 20, tol: float = 1e-6) -> torch.Tensor:
    """Poisons for ``B`` (base, target) pairs at once; returns ``(B, ...)`` on ``base_x``'s device.

    Args:
        extractor: the frozen network; features are the input of its last ``nn.Linear``.
        base_x, target_x: ``(B, C, H, W)`` pairs; poison ``i`` starts at and stays near ``base_x[i]``.
        beta0: proximity weight before the paper's dimension scaling (:func:`collision_beta`).
        steps: at most this many forward-backward iterations.
        lr: initial step size of the forward (gradient) step.
        bounds: the input box; the backward step is the exact proximal map of the distance term plus
            the box (both separable per pixel), i.e. the paper's step followed by clipping.
        opacity: their end-to-end variant's watermark: the base is first blended with the target,
            ``(1 - opacity) b + opacity t``, and that blend is what the poison stays near.
        decay_every: every this many steps each pair's objective is compared with its value at the
            last check; where it went up, that pair's lr is halved and it goes back to the checkpoint
            (the paper's rule for a lr that is too large).
        tol: stop once every pair moved by less than ``tol`` (relative L2) in one step.
    """
    base_x, target_x = check_images(base_x, "base_x"), check_images(target_x, "target_x")
    if base_x.shape != target_x.shape:
        raise GibbonInputError(f"base_x and target_x must have the same shape (one base per target), got "
                               f"{tuple(base_x.shape)} and {tuple(target_x.shape)}")
    if not beta0 >= 0:
        raise GibbonInputError(f"beta0 must be >= 0, got {beta0!r}; the paper uses 0.25")
    if not lr > 0:
        raise GibbonInputError(f"lr must be > 0, got {lr!r}")
    if not 0 <= opacity < 1:
        raise GibbonInputError(f"opacity must be in [0, 1), got {opacity!r}; the paper's watermark uses 0.3")
    steps, decay_every = check_positive_int(steps, "steps"), check_positive_int(decay_every, "decay_every")
    lo, hi = check_bounds(bounds)
    out_device, device = base_x.device, model_device(extractor)
    was_training = extractor.training
    extractor.eval()
    try:
        base, target = base_x.detach().to(device).float(), target_x.detach().to(device).float()
        with torch.no_grad():
            ft = penultimate(extractor, target)
        beta = collision_beta(beta0, ft.shape[1], base[0].numel())
        anchor = ((1 - opacity) * base + opacity * target).clamp(lo, hi)
        view = (-1,) + (1,) * (base.dim() - 1)

        def feature_loss(x):
            return ((penultimate(extractor, x) - ft) ** 2).sum(1)

        def objective(x):
            with torch.no_grad():
                return feature_loss(x) + beta * ((x - anchor) ** 2).flatten(1).sum(1)

        x = anchor.clone()
        step = torch.full((len(x),), float(lr), device=device)
        checkpoint, best = x.clone(), objective(x)
        for i in range(1, steps + 1):
            x_req = x.detach().requires_grad_(True)
            grad, = torch.autograd.grad(feature_loss(x_req).sum(), x_req)
            lam = step.view(view)
            x_hat = x - lam * grad                                          # forward step
            x_new = ((x_hat + lam * beta * anchor) / (1 + lam * beta)).clamp(lo, hi)  # backward step
            moved = (x_new - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)
            x = x_new
            if i % decay_every == 0:
                now = objective(x)
                worse = now > best
                step = torch.where(worse, step / 2, step)
                x = torch.where(worse.view(view), checkpoint, x)
                best = torch.where(worse, best, now)
                checkpoint = x.clone()
            if bool((moved < tol).all()):
                break
    finally:
        extractor.train(was_training)
    return x.detach().to(out_device)


def feature_collision_experiment(extractor: torch.nn.Module, train, test, *, base_class: int, target_class: int,
                                 n_targets: int = 50, beta0: float = 0.25, steps: int = 1000, lr: float = 0.05,
                                 opacity: float = 0.0, head_steps: int = 1000, head_lr: float = 0.05,
                                 noop: bool = False, seed: int = 0) -> CleanLabelResult:
    """The one-shot transfer-learning attack of Shafahi et al. over many targets.

    The victim is a softmax head on ``extractor``'s frozen features, trained from zero on the clean
    ``train`` features plus ONE poison labelled ``base_class`` (its true class: clean label). Each
    target gets its own poison and its own retrained head (all heads trained at once). Targets:
    up to ``n_targets`` test images of ``target_class`` that the clean head classifies correctly;
    bases: distinct random test images of ``base_class`` (kept out of the training set, as in the
    paper). Success: the retrained head labels the unmodified target ``base_class``.

    ``noop=True`` uses the unperturbed base as the "poison" (the control that should not succeed).
    """
    k = train.num_classes
    for name, c in (("base_class", base_class), ("target_class", target_class)):
        if int(c) != c or not 0 <= int(c) < k:
            raise GibbonInputError(f"{name} must be a class index in [0, {k}), got {c!r}")
    if base_class == target_class:
        raise GibbonInputError(f"base_class and target_class are both {base_class}; a clean-label collision "
                               "needs a base from another class than the target")
    n_targets = check_positive_int(n_targets, "n_targets")
    start = time.perf_counter()
    f_train, f_test = penultimate_features(extractor, train.x), penultimate_features(extractor, test.x)
    head = dict(num_classes=k, steps=head_steps, lr=head_lr)
    no_extra = torch.zeros(1, 0, f_train.shape[1])
    w0, b0 = train_linear_heads(f_train, train.y, no_extra, torch.zeros(1, 0, dtype=torch.long), **head)
    clean_pred = head_predict(w0, b0, f_test)[0]
    clean_acc = float((clean_pred == test.y).float().mean())
    g = torch.Generator().manual_seed(int(seed))
    candidates = ((test.y == target_class) & (clean_pred == test.y)).nonzero().flatten()
    targets = candidates[torch.randperm(len(candidates), generator=g)[:n_targets]]
    base_pool = (test.y == base_class).nonzero().flatten()
    if len(base_pool) < len(targets):
        raise GibbonInputError(f"only {len(base_pool)} test images of base class {base_class} for {len(targets)} "
                               "targets; lower n_targets")
    bases = base_pool[torch.randperm(len(base_pool), generator=g)[:len(targets)]]
    base_x, target_x = test.x[bases], test.x[targets]
    poisons = base_x.clone() if noop else feature_collision(
        extractor, base_x, target_x, beta0=beta0, steps=steps, lr=lr, bounds=train.bounds, opacity=opacity)
    f_poison = penultimate_features(extractor, poisons)
    labels = torch.full((len(targets), 1), int(base_class))
    w, b = train_linear_heads(f_train, train.y, f_poison[:, None], labels, **head)
    on_target = head_predict(w, b, f_test[targets][:, None])[:, 0]
    rate, hits = success_rate(on_target, labels.flatten())
    fitted = float((head_predict(w, b, f_poison[:, None])[:, 0] == labels.flatten()).float().mean())
    poisoned_acc = float((head_predict(w, b, f_test) == test.y).float().mean())
    l2, linf = perturbation_norms(poisons, base_x)
    base_gap = (penultimate_features(extractor, base_x) - f_test[targets]).norm(dim=1)
    poison_gap = (f_poison - f_test[targets]).norm(dim=1)
    setting = {"base_class": int(base_class), "target_class": int(target_class), "n_train": len(train.y),
               "beta0": beta0, "steps": steps, "lr": lr, "opacity": opacity, "head_steps": head_steps,
               "head_lr": head_lr, "feature_dim": int(f_train.shape[1]), "seed": int(seed),
               "poisons_fitted_as_base": fitted,
               "mean_feature_distance_base_target": float(base_gap.mean()),
               "mean_feature_distance_poison_target": float(poison_gap.mean())}
    return CleanLabelResult(attack="noop" if noop else "feature-collision", success_rate=rate, successes=hits,
                            target_indices=targets.tolist(), attacker_labels=labels.flatten().tolist(),
                            clean_accuracy=clean_acc, poisoned_accuracy=poisoned_acc, l2=l2, linf=linf,
                            seconds=time.perf_counter() - start, setting=setting)
