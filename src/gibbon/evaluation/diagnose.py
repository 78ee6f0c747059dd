"""``diagnose``: tell a real defense from a masked one.

A defense that only hides its gradient looks robust to the gradient attacks it was tuned on and
falls to a random step, a gradient-free attack, a transfer attack or a larger budget. This
module runs the checks the field's evaluation guides ask for and returns :class:`Finding`\\ s,
each with the measured evidence and what to do, and a verdict: ``"no sign of masking"`` or
``"masking suspected"``.

Threat model: white-box and score-based black-box, L-infinity ``eps``, untargeted. The attacks
(on the first ``n`` samples): FGSM, R+FGSM, PGD-10, PGD-100 at ``eps / 2``, ``eps``,
``2 eps`` and at the whole input box, APGD with the cross-entropy and with the
scale-invariant DLR loss (Croce & Hein 2020, arXiv:2003.01690), Square (score-based), and optionally PGD-100 transferred
from another model and Papernot's substitute attack. "A beats B" means: A's robust accuracy is
lower and the two 95% Wilson intervals do not overlap (so an undefended model on which every
attack reaches ~0% is never flagged for ordering).

References:
    Athalye, Carlini & Wagner (2018), arXiv:1802.00420 (obfuscated gradients, BPDA, EOT).
    Carlini et al. (2019), "On Evaluating Adversarial Robustness", arXiv:1902.06705.
    Tramer, Kurakin, Papernot, Goodfellow, Boneh & McDaniel (2018), arXiv:1705.07204
    (R+FGSM beating FGSM, transfer beating white-box on FGSM-trained models).
    Papernot, McDaniel, Wu, Jha & Swami (2016), arXiv:1511.04508 and Carlini & Wagner (2016),
    arXiv:1607.04311 (distillation's saturated softmax).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.evaluation import probes
from gibbon.evaluation.stats import wilson_interval

NO_SIGN, SUSPECTED = "no sign of masking", "masking suspected"
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


@dataclass
class Diagnosis:
    """What :func:`diagnose` returns; ``to_dict()`` is its JSON form, ``checklist()`` its text form."""

    verdict: str
    findings: list[Finding]
    accuracies: dict
    settings: dict
    seconds: float = 0.0

    @property
    def masking_suspected(self) -> bool:
        return self.verdict == SUSPECTED

    def flagged(self) -> list[Finding]:
        return [f for f in self.findings if f.flagged]

    def to_dict(self) -> dict:
        return asdict(self)

    def checklist(self) -> str:
        lines = [f"verdict: {self.verdict}", "checks ([ok] holds, [!!] fails, with what to do):"]
        for f in self.findings:
            lines.append(f"[{'!!' if f.flagged else 'ok'}] {f.title}")
            if f.flagged and f.advice:
                lines.append(f"     -> {f.advice}")
        return "\n".join(lines)


def _accuracy(robust: torch.Tensor) -> dict:
    n, k = int(robust.numel()), int(robust.sum())
    low, high = wilson_interval(k, n)
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


def _attacks(eps: float, width: float, square_queries: int) -> list[tuple[str, object, float]]:
    from gibbon.attacks import APGD, FGSM, PGD, RFGSM, Square

    pgd100 = PGD(steps=100, early_stop=True)
    return [
        ("FGSM", FGSM(), eps),
        ("R+FGSM", RFGSM(random_step=eps / 2), eps),
        ("PGD-10", PGD(steps=10, early_stop=True), eps),
        ("PGD-100", pgd100, eps),
        ("APGD-CE", APGD(early_stop=True), eps),
        ("APGD-DLR", APGD(loss="dlr", early_stop=True), eps),
        ("PGD-100 eps/2", pgd100, eps / 2),
        ("PGD-100 2eps", pgd100, min(2 * eps, width)),
        ("PGD-100 unbounded", pgd100, width),
        (f"Square-{square_queries}", Square(max_queries=square_queries), eps),
    ]


def diagnose(model, data, *, eps: float, n: int = 500, batch_size: int = 250, seed: int = 0, device="cpu",
             square_queries: int = 1000, transfer_from=None, substitute: bool = False, probe_samples: int = 200,
             progress: bool = False) -> Diagnosis:
    """Run the gradient-masking checks on ``model`` over the first ``n`` samples of ``data``.

    Args:
        model: ``x -> logits`` (a defended model: input transformations inside it).
        data: a :class:`gibbon.data.Dataset`; its ``bounds`` are the input box.
        eps: the L-infinity budget the defense claims.
        n: samples attacked. batch_size: attack mini-batch. seed: all randomness.
        square_queries: Square's per-sample query budget (the gradient-free check).
        transfer_from: an optional separately trained model; PGD-100 crafted on it is sent to ``model``.
        substitute: also run Papernot's substitute attack (150 seed images taken after the
            first ``n``, 3 augmentations, 1,200 labels) with ``model`` as a label-only oracle (minutes).
        probe_samples: samples the gradient, finite-difference and randomness probes use.

    Returns:
        A :class:`Diagnosis`.

    Example:
        >>> from gibbon.data import load
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> report = diagnose(net, load("digits", "test"), eps=0.1, n=20, square_queries=20)
        >>> report.verdict in ("no sign of masking", "masking suspected")
        True
    """
    from gibbon.attacks.run import run_attack

    if not eps > 0:
        raise GibbonInputError(f"eps must be > 0 (the budget the defense claims), got {eps!r}")
    if n < 1 or len(data) < 1:
        raise GibbonInputError(f"need at least one sample to diagnose (n={n}, dataset has {len(data)})")
    start = time.perf_counter()
    low, high = (float(b) for b in data.bounds)
    width = high - low
    x, y = data.x[:n].to(device), data.y[:n].to(device)
    subset = dataclasses.replace(data, x=x.cpu(), y=y.cpu())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).cpu()
        accuracies = {"clean": _accuracy(clean)}
        for name, attack, attack_eps in _attacks(eps, width, square_queries):
            try:
                result = run_attack(model, subset, attack, eps=attack_eps, batch_size=batch_size, seed=seed,
                                    device=device, progress=progress)
            except RuntimeError as err:  # no gradient path: a white-box attacker gets nothing out of it
                if "grad" not in str(err):
                    raise
                accuracies[name] = {**_accuracy(clean), "eps": attack_eps, "error": str(err).splitlines()[0]}
                continue
            accuracies[name] = {**_accuracy(clean & (result.pred_adv == result.y)), "eps": attack_eps}
        if transfer_from is not None:
            accuracies["transfer PGD-100"] = _transfer(transfer_from, model, subset, eps, batch_size, seed, device,
                                                       clean)
        if substitute:
            accuracies["substitute FGSM"] = _substitute(model, data, n, eps, seed, device, clean)
        px, py = x[:probe_samples], y[:probe_samples]
        gen = torch.Generator().manual_seed(seed)
        gradient = probes.input_gradient(model, px, py)  # one backward pass serves both probes
        grads = probes.gradient_probe(model, px, py, eps=eps, bounds=(low, high), generator=gen, gradient=gradient)
        fd = probes.finite_difference_probe(model, px, py, step=eps / 4, bounds=(low, high), generator=gen,
                                            gradient=gradient)
        randomness = probes.randomness_probe(model, px)
    finally:
        model.train(was_training)
    findings = (_ordering_findings(accuracies) + [_black_box_finding(accuracies), _unbounded_finding(accuracies),
                _monotone_finding(accuracies), _gradient_finding(grads), _finite_difference_finding(fd),
                _randomness_finding(randomness)])
    verdict = SUSPECTED if any(f.flagged for f in findings) else NO_SIGN
    settings = {"eps": eps, "norm": "linf", "n": int(len(y)), "seed": seed, "square_queries": square_queries,
                "dataset": data.name, "split": data.split, "probe_samples": int(len(py)),
                "transfer_from": transfer_from is not None, "substitute": substitute}
    return Diagnosis(verdict, findings, accuracies, settings, time.perf_counter() - start)


def _transfer(source, target, subset, eps, batch_size, seed, device, clean) -> dict:
    from gibbon.attacks import PGD
    from gibbon.attacks.run import run_attack
    from gibbon.transfer._batches import predicted_labels

    crafted = run_attack(source, subset, PGD(steps=100), eps=eps, batch_size=batch_size, seed=seed, device=device,
                         progress=False)
    pred = predicted_labels(target, crafted.x_adv.to(device), batch_size).cpu()
    return {**_accuracy(clean & (pred == crafted.y)), "eps": eps}


def _substitute(model, data, n, eps, seed, device, clean) -> dict:
    from gibbon import zoo
    from gibbon.attacks import FGSM
    from gibbon.oracles import Oracle
    from gibbon.transfer import train_substitute
    from gibbon.transfer._batches import craft, predicted_labels

    seeds = data.x[n:n + 150]
    if len(seeds) < 10:
        raise GibbonInputError(f"the substitute check needs >= 10 seed images after the first n={n}; use a smaller n")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sub = zoo.build("mlp-200-200", data).to(device)
    oracle = Oracle(model, output="label")
    trained = train_substitute(oracle, seeds.to(device), sub, rounds=3, seed=seed, classes=data.classes,
                               bounds=data.bounds)
    x, y = data.x[:n].to(device), data.y[:n].to(device)
    adv = craft(trained.substitute, FGSM(), x, y, eps=eps, norm="linf", bounds=data.bounds, batch_size=500, seed=seed)
    pred = predicted_labels(model, adv, 500).cpu()
    return {**_accuracy(clean & (pred == y.cpu())), "eps": eps, "queries": trained.queries}


def _ordering_findings(acc: dict) -> list[Finding]:
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


def _black_box_finding(acc: dict) -> Finding:
    white = min((acc[k] for k in WHITE_BOX), key=lambda a: a["accuracy"])
    others = {k: v for k, v in acc.items() if k.startswith(("Square", "transfer", "substitute"))}
    beaten = [k for k, v in others.items() if beats(v, white)]
    return Finding(
        "black-box-beats-white-box", "gradient-free and transfer attacks are not stronger than white-box ones",
        bool(beaten), {"best white-box": white, **others, "stronger than white-box": beaten},
        "the gradients mislead the white-box attacks (gradient masking): the model is not robust at this eps; "
        "attack a differentiable surrogate (BPDA), the margin loss, or report the black-box number")


def _unbounded_finding(acc: dict) -> Finding:
    full = acc["PGD-100 unbounded"]
    return Finding(
        "unbounded-not-zero", "PGD over a ball covering the whole input box reaches ~0% accuracy",
        full["interval"][0] > UNBOUNDED_FLOOR, {"PGD-100 unbounded": full},
        "an attack that can reach any input fails: its gradient carries no signal (saturated softmax, "
        "quantization, non-differentiable layer); use the logit margin loss (C&W), BPDA or Square")


def _monotone_finding(acc: dict) -> Finding:
    sweep = [acc[k] for k in ("PGD-100 eps/2", "PGD-100", "PGD-100 2eps", "PGD-100 unbounded")]
    rises = [(a["eps"], b["eps"]) for a, b in zip(sweep, sweep[1:]) if beats(a, b)]
    return Finding(
        "not-monotone-in-eps", "robust accuracy falls (weakly) as eps grows",
        bool(rises), {"sweep": sweep, "rises between eps": rises},
        "a larger budget should never help the model: the attack is not converging (more steps, "
        "restarts, EOT for randomness)")


def _gradient_finding(g: dict) -> Finding:
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


def _finite_difference_finding(fd: dict) -> Finding:
    flagged = fd["cut"] is not None or fd["autograd_zero_where_loss_moved"] > GRADIENT_FRACTION * max(fd["pairs"], 1)
    return Finding(
        "finite-differences", "finite differences agree with autograd (no quantizing or non-differentiable front end)",
        flagged, fd,
        "autograd says the loss is constant where finite differences move it: a quantizing or non-differentiable "
        "input transformation; attack it with BPDA (gibbon.defenses.bpda)")


def _randomness_finding(r: dict) -> Finding:
    return Finding(
        "randomized-outputs", "the same input gives the same output", r["random"], r,
        "the model is randomized: one attack run measures one random draw; attack the expectation with EOT "
        "(gibbon.defenses.eot) and report that")
