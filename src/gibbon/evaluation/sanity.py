"""Cheap checks that catch evaluations which would overstate robustness.

Before the attacks (on one small batch, :data:`SANITY_SAMPLES` rows):

* outputs that look like probabilities (softmax at the end): gradients of the loss vanish and
  attacks stall;
* outputs that change between two identical calls (a randomized model): a single attack run
  measures one random draw, not the defense; attack the expectation (EOT);
* zero or non-finite input gradients of the cross-entropy: the attacks cannot follow them
  (gradient masking / obfuscation).

After the attacks (from the robust accuracies): worst-case accuracy that *increases* with eps,
and robust samples under an L-infinity ball that covers the whole input box.

References:
    Athalye, Carlini, Wagner (2018), "Obfuscated Gradients Give a False Sense of Security",
    arXiv:1802.00420 (the symptoms and BPDA / EOT).
    Carlini et al. (2019), "On Evaluating Adversarial Robustness", arXiv:1902.06705 (the
    checklist: monotone in eps, unbounded attacks reach 0%).
    Croce & Hein (2020), AutoAttack ``checks.py`` (the same idea as warnings).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SANITY_SAMPLES = 100
"""Rows of the data the pre-attack checks run on (the first ones)."""
BUDGET_SANITY_SAMPLES = 10
"""The same under a shared query budget, where the checks cost 20 queries and skip gradients."""

PROBABILITY_TOLERANCE = 1e-3
"""Rows summing to 1 within this and all entries >= -1e-6 are taken for probabilities."""

RANDOM_TOLERANCE = 1e-3
"""Two identical calls whose outputs differ by more than this (relative) mean randomness."""

GRADIENT_FRACTION = 0.5
"""Warn when more than this fraction of the checked samples has an all-zero input gradient."""

MONOTONE_SLACK = 0.01
"""Worst-case accuracy may rise with eps by at most this much (noise) before a warning."""


def model_checks(model, x: torch.Tensor, y: torch.Tensor, *, gradients: bool = True) -> list[str]:
    """Run the pre-attack checks on ``model`` with one small batch; return warning messages.

    Never fills ``param.grad``: the input gradient is taken with ``torch.autograd.grad``.

    Args:
        model: ``x -> logits``, already in the mode it will be evaluated in.
        x: a small batch of inputs on the model's device (the first :data:`SANITY_SAMPLES`).
        y: its labels.
        gradients: also check the input gradients (off for black-box targets, which refuse them).

    Returns:
        Human-readable warnings, each with the measured numbers and what to do.
    """
    warnings: list[str] = []
    n = int(x.shape[0])
    if n == 0:
        return warnings
    with torch.no_grad():
        first = model(x).detach()
        second = model(x).detach()
    if first.ndim != 2:
        return [f"model output has shape {tuple(first.shape)}; expected logits of shape (N, classes)"]

    if not torch.isfinite(first).all():
        bad = int((~torch.isfinite(first)).any(dim=1).sum())
        warnings.append(f"model outputs non-finite logits on {bad} of {n} samples; check the model and its inputs")
    elif (first >= -1e-6).all() and (first.sum(dim=1) - 1).abs().max() < PROBABILITY_TOLERANCE:
        warnings.append(
            "model outputs look like probabilities (non-negative rows summing to 1); attacks need logits: "
            "remove the final softmax"
        )

    scale = first.abs().max().clamp_min(1e-12)
    changed = int((first.argmax(dim=1) != second.argmax(dim=1)).sum())
    if changed or (first - second).abs().max() > RANDOM_TOLERANCE * scale:
        warnings.append(
            f"model outputs change between two identical calls on the same batch ({changed} of {n} predictions "
            "changed): the model is randomized; a single attack run is not a robustness measure: use EOT "
            "(average gradients over the randomness) and report it"
        )

    if not gradients:
        return warnings
    x_var = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = model(x_var)
            loss = F.cross_entropy(logits, y, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_var, allow_unused=True)
    except RuntimeError as err:  # the output does not depend on the input through autograd at all
        return warnings + [
            f"no input gradient reaches the model's output ({str(err).splitlines()[0]}): gradient attacks cannot run "
            "(a detach, NumPy step or threshold inside forward); run `gibbon evaluate --adaptive`, which applies "
            "straight-through gradients (BPDA) and gradient-free attacks"]
    if grad is None:
        grad = torch.zeros_like(x_var)
    flat = grad.detach().reshape(n, -1)
    nonfinite = int((~torch.isfinite(flat)).any(dim=1).sum())
    zero = int((flat == 0).all(dim=1).sum())
    if nonfinite:
        warnings.append(
            f"input gradients of the cross-entropy are non-finite on {nonfinite} of {n} samples: gradient attacks "
            "will fail silently (gradient masking); make the model numerically stable or attack it with BPDA"
        )
    if zero > GRADIENT_FRACTION * n:
        warnings.append(
            f"input gradients of the cross-entropy are exactly zero on {zero} of {n} samples (> "
            f"{GRADIENT_FRACTION:.0%}): gradient masking (saturated softmax, quantization, non-differentiable "
            "layer); use a margin/DLR loss, BPDA, or gradient-free attacks before trusting robust accuracy"
        )
    return warnings


def result_checks(worst_case, norm: str, bounds: tuple[float, float]) -> list[str]:
    """Post-attack checks on the worst-case accuracies (a list of ``WorstCase``); return warnings."""
    warnings: list[str] = []
    ordered = sorted((w for w in worst_case if w.norm == norm), key=lambda w: w.eps)
    for smaller, larger in zip(ordered, ordered[1:]):
        if larger.robust_accuracy > smaller.robust_accuracy + MONOTONE_SLACK:
            warnings.append(
                f"worst-case robust accuracy rises with eps ({smaller.robust_accuracy:.1%} at eps={smaller.eps:g}, "
                f"{larger.robust_accuracy:.1%} at eps={larger.eps:g}): the attacks are not converging "
                "(too few steps, or gradient masking); use stronger attacks"
            )
    if norm == "linf":
        width = bounds[1] - bounds[0]
        for w in ordered:
            if w.eps >= width and w.robust_accuracy > 0:
                warnings.append(
                    f"{w.robust_accuracy:.1%} of samples are robust at eps={w.eps:g}, a ball covering the whole "
                    f"input box {tuple(bounds)}: the attacks fail where any input is reachable (gradient masking, "
                    "or a constant model)"
                )
    return warnings


def attack_checks(results, cascade: bool) -> list[str]:
    """Post-attack checks across attacks (a list of ``Result``); return warnings.

    * A gradient-free attack (it asked for no gradient but forwarded queries: Square, one-pixel,
      ...) that breaks samples the gradient attacks left robust: the gradients mislead
      (AutoAttack's check; Athalye et al. 2018's "black-box beats white-box" symptom).
    * One attack's robust accuracy rising with eps (non-cascade runs with several attacks: in a
      cascade the per-attack numbers depend on the attacks before).
    """
    warnings: list[str] = []
    by_eps: dict[float, list] = {}
    for r in results:
        by_eps.setdefault(r.eps, []).append(r)
    for eps, rows in by_eps.items():
        for i, r in enumerate(rows):
            if r.gradients or not r.forwards:
                continue
            white_before = [w for w in rows[:i] if w.gradients] if cascade else [w for w in rows if w.gradients]
            if not white_before:
                continue
            # in a cascade the numbers are cumulative: compare with the row just before
            reference = rows[i - 1].robust_accuracy if cascade else min(w.robust_accuracy for w in white_before)
            if r.robust_accuracy < reference - MONOTONE_SLACK:
                warnings.append(
                    f"the gradient-free attack {r.attack} lowers robust accuracy below the gradient attacks at "
                    f"eps={eps:g} ({r.robust_accuracy:.1%} vs {reference:.1%}): the gradients are misleading "
                    "(gradient masking); trust the worst case, and try BPDA/EOT or a margin/DLR loss"
                )
    by_attack: dict[tuple, list] = {}
    for r in results:
        by_attack.setdefault((r.attack, repr(r.params)), []).append(r)
    # with one attack the worst-case check in result_checks already says it
    if not cascade and len(by_attack) > 1:
        for (name, _), rows in by_attack.items():
            rows = sorted(rows, key=lambda r: r.eps)
            for smaller, larger in zip(rows, rows[1:]):
                if larger.robust_accuracy > smaller.robust_accuracy + MONOTONE_SLACK:
                    warnings.append(
                        f"{name}'s robust accuracy rises with eps ({smaller.robust_accuracy:.1%} at "
                        f"eps={smaller.eps:g}, {larger.robust_accuracy:.1%} at eps={larger.eps:g}): the attack is "
                        "not converging (too few steps, too small a step, or gradient masking)"
                    )
    return warnings
