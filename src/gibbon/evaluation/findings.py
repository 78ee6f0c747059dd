"""The checks behind :func:`gibbon.evaluation.diagnose.diagnose`: each turns measured numbers
into a :class:`Finding` with its evidence and what to do.

"A beats B" means: A's robust accuracy is lower and the two 95% Wilson intervals do not overlap
(so an undefended model on which every attack reaches ~0% is never flagged for ordering).

References:
    Athalye, Carlini & Wagner (2018), arXiv:1802.00420 (obfuscated gradients, BPDA, EOT).
    Carlini et al. (2019), "On Evaluating Adversarial Robustness", arXiv:1902.06705, section 4.
    Tramer, Kurakin, Papernot, Goodfellow, Boneh & McDaniel (2018), arXiv:1705.07204
    (R+FGSM beating FGSM, transfer beating white-box on FGSM-trained models).
    Papernot, McDaniel, Wu, Jha & Swami (2016), arXiv:1511.04508 and Carlini & Wagner (2016),
    arXiv:1607.04311 (distillation's saturated softmax).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gibbon.evaluation.stats import wilson_interval

WHITE_BOX = ("FGSM", "R+FGSM", "PGD-10", "PGD-100", "APGD-CE", "APGD-DLR")
"""The white-box attacks the gradient-free and transfer attacks are compared with (their best)."""
GRADIENT_FRACTION = 0.1
"""Flag zero / non-finite gradients or saturation on more than this fraction of probed samples."""
UNBOUNDED_FLOOR = 0.01
"""Robust accuracy at a ball covering the whole box should be ~0; flag above this (and its noise)."""


@dataclass
class Finding:
    """One check: its id, a one-line title, whether it fired, the numbers, and what to do."""

    check: str
    title: str
    flagged: bool
    evidence: dict = field(default_factory=dict)
    advice: str = ""


def accuracy_entry(robust) -> dict:
    """``{"accuracy", "interval", "n"}`` of a per-sample robust vector (bool, or a fraction of draws)."""
    n, k = int(robust.numel()), float(robust.double().sum())
    low, high = wilson_interval(int(round(k)), n)
    return {"accuracy": k / max(n, 1), "interval": [low, high], "n": n}


def beats(stronger: dict, weaker: dict) -> bool:
    """True when ``stronger``'s robust accuracy is below ``weaker``'s beyond sampling noise
    (the 95% Wilson intervals do not overlap).

    Example:
        >>> beats({"interval": [0.10, 0.16]}, {"interval": [0.30, 0.38]})
        True
        >>> beats({"interval": [0.0, 0.01]}, {"interval": [0.0, 0.01]})
        False
    """
    return stronger["interval"][1] < weaker["interval"][0]


def ordering_findings(acc: dict) -> list[Finding]:
    out = []
    single, iterative = acc["FGSM"], min(acc["PGD-10"], acc["PGD-100"], key=lambda a: a["accuracy"])
    out.append(Finding(
        "single-step-beats-iterative", "iterative attacks are at least as strong as single-step FGSM",
        beats(single, iterative), {"FGSM": single, "PGD (best of 10, 100 steps)": iterative},
        "the iterative attack is being misled (gradient masking): check its loss and step size, "
        "try the margin loss, more restarts, BPDA or EOT"))
    out.append(Finding(
        "random-step-beats-fgsm", "a random step does not help: R+FGSM is not stronger than FGSM",
        beats(acc["R+FGSM"], single), {"R+FGSM": acc["R+FGSM"], "FGSM": single},
        "the loss surface is sharply curved at the data points, so the gradient there is uninformative "
        "(FGSM-only adversarial training does this; Tramer et al. 2018): evaluate with PGD from random starts, "
        "transfer and gradient-free attacks, and prefer PGD or ensemble adversarial training"))
    out.append(Finding(
        "more-steps-weaker", "more PGD steps are not weaker (PGD-100 <= PGD-10)",
        beats(acc["PGD-10"], acc["PGD-100"]), {"PGD-10": acc["PGD-10"], "PGD-100": acc["PGD-100"]},
        "the attack does not converge: randomness in the model (use EOT) or a shattered gradient (use BPDA)"))
    return out


def black_box_finding(acc: dict) -> Finding:
    white = min((acc[k] for k in WHITE_BOX), key=lambda a: a["accuracy"])
    others = {k: v for k, v in acc.items() if k.startswith(("Square", "transfer", "substitute"))}
    beaten = [k for k, v in others.items() if beats(v, white)]
    return Finding(
        "black-box-beats-white-box", "gradient-free and transfer attacks are not stronger than white-box ones",
        bool(beaten), {"best white-box": white, **others, "stronger than white-box": beaten},
        "the gradients mislead the white-box attacks (gradient masking): the model is not robust at this eps; "
        "attack a differentiable surrogate (BPDA), the margin loss, or report the black-box number")


def unbounded_finding(acc: dict) -> Finding:
    full = acc["PGD-100 unbounded"]
    return Finding(
        "unbounded-not-zero", "PGD over a ball covering the whole input box reaches ~0% accuracy",
        full["interval"][0] > UNBOUNDED_FLOOR, {"PGD-100 unbounded": full},
        "an attack that can reach any input fails: its gradient carries no signal (saturated softmax, "
        "quantization, non-differentiable layer); use the logit margin loss (C&W), BPDA or Square")


def monotone_finding(acc: dict) -> Finding:
    sweep = [acc[k] for k in ("PGD-100 eps/2", "PGD-100", "PGD-100 2eps", "PGD-100 unbounded")]
    rises = [(a["eps"], b["eps"]) for a, b in zip(sweep, sweep[1:]) if beats(a, b)]
    return Finding(
        "not-monotone-in-eps", "robust accuracy falls (weakly) as eps grows",
        bool(rises), {"sweep": sweep, "rises between eps": rises},
        "a larger budget should never help the model: the attack is not converging (more steps, "
        "restarts, EOT for randomness)")


def gradient_finding(g: dict) -> Finding:
    n = max(g["samples"], 1)
    bad = (g["zero"] + g["nonfinite"]) / n
    saturated = g["saturated"] / n
    flagged = bad > GRADIENT_FRACTION or saturated > GRADIENT_FRACTION or g["no_gradient_path"] is not None
    if g["no_gradient_path"] is not None:
        advice = "no gradient reaches the input (a non-differentiable step in forward): attack through BPDA"
    elif g["zero_but_not_flat"] > GRADIENT_FRACTION * n:
        advice = ("the gradient is zero where the loss is not flat: a quantizing or shattered front end; "
                  "attack through BPDA (straight-through gradient)")
    else:
        advice = ("the softmax is saturated (logit gaps above ~80 underflow float32 gradients, as after defensive "
                  "distillation): use the logit margin loss (C&W) or divide the logits by a temperature for the attack")
    return Finding(
        "gradients", "input gradients are finite, non-zero and the softmax is not saturated", flagged,
        {**g, "zero_or_nonfinite_fraction": bad, "saturated_fraction": saturated}, advice)


def finite_difference_finding(fd: dict) -> Finding:
    flagged = fd["cut"] is not None or fd["autograd_zero_where_loss_moved"] > GRADIENT_FRACTION * max(fd["pairs"], 1)
    return Finding(
        "finite-differences", "finite differences agree with autograd (no quantizing or non-differentiable front end)",
        flagged, fd,
        "autograd says the loss is constant where finite differences move it: a quantizing or non-differentiable "
        "input transformation; attack it with BPDA (gibbon.defenses.bpda)")


def randomness_finding(r: dict) -> Finding:
    return Finding(
        "randomized-outputs", "the same input gives the same output", r["random"], r,
        "the model is randomized: one attack run measures one random draw; attack the expectation with EOT "
        "(gibbon.defenses.eot) and report that")


def random_step_finding(acc: dict) -> Finding:
    """A random extreme point of the ball beats the gradient's (FGSM): the gradient points nowhere useful."""
    return Finding(
        "random-noise-beats-gradient", "a gradient step is stronger than a random step of the same size",
        beats(acc["random noise"], acc["FGSM"]), {"random noise": acc["random noise"], "FGSM": acc["FGSM"]},
        "random signs of size eps do better than the signed gradient: the gradient is uninformative (masked); "
        "attack with BPDA, EOT or gradient-free attacks")


def probabilities_finding(outputs: dict) -> Finding:
    return Finding(
        "softmax-outputs", "the model returns logits, not probabilities", bool(outputs["probabilities"]), outputs,
        "the model ends in a softmax: the cross-entropy of a softmax of probabilities has a vanishing gradient; "
        "attack log(outputs) (remedy log-probabilities) or remove the softmax")


def model_errors_finding(outputs: dict, errors: list, failed: int, attack_errors: dict) -> Finding:
    # an attack that cannot run for want of a gradient is the gradient checks' finding, not this one
    flagged = bool(errors) or failed > 0 or outputs["nonfinite_samples"] > 0
    return Finding(
        "model-errors", "the model answers every input with finite scores", flagged,
        {"model_errors": errors, "failed_samples": failed, "nonfinite_clean_samples": outputs["nonfinite_samples"],
         "attack_errors": attack_errors},
        "the model raised or returned NaN / inf on some inputs (counted as misclassified there): fix its input "
        "handling; robust accuracies on the affected samples say more about the crash than about robustness")


SINGLE_STEP_SHARE = 0.1
"""Flag when FGSM breaks less than this share of what the iterative attacks break ..."""
ITERATIVE_BREAKS = 0.5
"""... and the iterative attacks break at least this fraction of the clean-correct samples."""


def single_step_far_weaker_finding(acc: dict) -> Finding:
    """FGSM-trained models that overfit catastrophically (Wong et al. 2020, arXiv:2001.03994) keep
    FGSM's accuracy near the clean one while PGD breaks nearly everything: the gradient at the data
    points is locally masked. An honest robust model keeps both high; an undefended one loses both."""
    clean = acc["clean"]["accuracy"]
    iterative = min(acc["PGD-10"]["accuracy"], acc["PGD-100"]["accuracy"])
    fgsm = acc["FGSM"]["accuracy"]
    broken_iterative, broken_fgsm = clean - iterative, clean - fgsm
    share = broken_fgsm / broken_iterative if broken_iterative > 0 else 1.0
    flagged = broken_iterative >= ITERATIVE_BREAKS * max(clean, 1e-12) and share < SINGLE_STEP_SHARE
    return Finding(
        "single-step-far-weaker", "FGSM breaks a fair share of what iterative attacks break", bool(flagged),
        {"clean": clean, "FGSM": fgsm, "PGD (best of 10, 100 steps)": iterative, "fgsm_share_of_broken": share},
        "one gradient step at the data points finds almost nothing that a few more steps find: the gradient is "
        "masked locally (catastrophic overfitting of FGSM training): report the iterative attacks' accuracy, retrain "
        "with random starts (fast AT with its guard) or PGD, and check R+FGSM and transfer")
