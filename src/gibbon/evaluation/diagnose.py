"""``diagnose``: tell a real defense from a masked one, then attack it the way it needs.

A defense that only hides its gradient looks robust to the gradient attacks it was tuned on and
falls to a random step, a gradient-free attack, a transfer attack or a larger budget. This
module runs the checks the field's evaluation guides ask for (:mod:`~gibbon.evaluation.findings`),
applies the remedy each failed check calls for (:mod:`~gibbon.evaluation.remedies`: BPDA
through straight-through gradients, EOT, margin losses, gradient-free and surrogate attacks),
and reports the **adaptive robust accuracy**: the per-sample worst case over every attack at
``eps``, remedies and (for a deterministic model) the ``reliable`` suite included.

Any model that maps a batch to scores can be diagnosed (:class:`~gibbon.evaluation.adapters.Scores`):
tuple, dict and probability outputs, NaN, models that raise on some inputs, randomized
forwards. What goes wrong is a finding with its evidence, never a traceback.

Threat model: white-box and score-based black-box, L-infinity ``eps``, untargeted. The checks'
attacks (on the first ``n`` samples): FGSM, random signs of size ``eps``, R+FGSM, PGD-10,
PGD-100 at ``eps / 2``, ``eps``, ``2 eps`` and at the whole input box, APGD with the
cross-entropy and with the scale-invariant DLR loss (Croce & Hein 2020, arXiv:2003.01690),
Square (score-based), and optionally PGD-100 transferred from another model and Papernot's
substitute attack.

References:
    Athalye, Carlini & Wagner (2018), arXiv:1802.00420 (obfuscated gradients, BPDA, EOT).
    Carlini et al. (2019), "On Evaluating Adversarial Robustness", arXiv:1902.06705.
    Croce & Hein (2020), arXiv:2003.01690 (the reliable suite, per-sample worst case).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.evaluation import findings as checks
from gibbon.evaluation import probes
from gibbon.evaluation import remedies as fixes
from gibbon.evaluation.adapters import Scores, looks_like_probabilities
from gibbon.evaluation.adaptive import apply_remedies, suite_worst_case
from gibbon.evaluation.findings import GRADIENT_FRACTION, WHITE_BOX, Finding, accuracy_entry, beats

__all__ = ["diagnose", "Diagnosis", "Finding", "beats", "NO_SIGN", "SUSPECTED", "WHITE_BOX", "GRADIENT_FRACTION"]

NO_SIGN, SUSPECTED = "no sign of masking", "masking suspected"
OFF_EPS = ("PGD-100 eps/2", "PGD-100 2eps", "PGD-100 unbounded")
"""Attacks run at another budget than ``eps``: checks only, never part of the worst case."""


@dataclass
class Diagnosis:
    """What :func:`diagnose` returns; ``to_dict()`` is its JSON form, ``checklist()`` its text form.

    Attributes:
        verdict: ``"no sign of masking"`` or ``"masking suspected"``.
        findings: every check, flagged or not. accuracies: attack -> accuracy entry
            (``accuracy``, Wilson ``interval``, ``n``, ``eps``; ``remedy`` for the remedies' attacks).
        adaptive_robust_accuracy: per-sample worst case over all attacks at ``eps`` (remedies
            included), with ``adaptive_interval``; a randomized model's as the mean over draws.
        remedies: the remedies applied: name, why, and the accuracy each reached.
    """

    verdict: str
    findings: list[Finding]
    accuracies: dict
    settings: dict
    seconds: float = 0.0
    adaptive_robust_accuracy: float = float("nan")
    adaptive_interval: list = dataclasses.field(default_factory=list)
    remedies: list = dataclasses.field(default_factory=list)

    @property
    def masking_suspected(self) -> bool:
        return self.verdict == SUSPECTED

    def flagged(self) -> list[Finding]:
        return [f for f in self.findings if f.flagged]

    def to_dict(self) -> dict:
        return {**asdict(self), "masking_suspected": self.masking_suspected}

    def checklist(self) -> str:
        lines = [f"verdict: {self.verdict}", "checks ([ok] holds, [!!] fails, with what to do):"]
        for f in self.findings:
            lines.append(f"[{'!!' if f.flagged else 'ok'}] {f.title}")
            if f.flagged and f.advice:
                lines.append(f"     -> {f.advice}")
        for r in self.remedies:
            lines.append(f"remedy {r['name']} ({r['why']}): {r['accuracy']:.2%}")
        low, high = self.adaptive_interval or [float("nan")] * 2
        lines.append(f"adaptive robust accuracy: {self.adaptive_robust_accuracy:.2%} [{low:.1%}, {high:.1%}]")
        return "\n".join(lines)


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


class _Run:
    """The samples, the model and its scoring shared by every attack of one diagnosis."""

    def __init__(self, model, data, x, y, *, batch_size, seed, device, draws, progress):
        self.model, self.data, self.x, self.y = model, data, x, y
        self.batch_size, self.seed, self.device, self.draws, self.progress = batch_size, seed, device, draws, progress
        self.subset = dataclasses.replace(data, x=x.cpu(), y=y.cpu())
        self.attack_errors: dict[str, str] = {}
        self.crafted: dict[str, torch.Tensor] = {}  # attack -> its x_adv (CPU), to re-score a randomized model

    def on(self, only: torch.Tensor) -> "_Run":
        """The same run restricted to the samples ``only`` (bool ``[N]``); attack errors are shared."""
        idx = only.nonzero().squeeze(1)
        sub = _Run(self.model, self.data, self.x[idx.to(self.x.device)], self.y[idx.to(self.y.device)],
                   batch_size=self.batch_size, seed=self.seed, device=self.device, draws=self.draws,
                   progress=self.progress)
        sub.attack_errors = self.attack_errors
        return sub

    def keep(self, name: str, x_adv: torch.Tensor, only: torch.Tensor | None = None) -> None:
        """Remember ``name``'s adversarial inputs (``only``: they cover those samples; the rest stay clean)."""
        if only is None:
            self.crafted[name] = x_adv.detach().cpu()
        else:
            full = self.x.detach().cpu().clone()
            full[only.nonzero().squeeze(1).cpu()] = x_adv.detach().cpu()
            self.crafted[name] = full

    def worst_case(self, at_eps: dict) -> torch.Tensor:
        """Per-sample worst case over ``at_eps``. A deterministic model: the minimum. A randomized one: each
        sample's most damaging input is picked on the draws that scored it, then scored again on fresh draws,
        since the minimum of several noisy estimates would understate its accuracy."""
        values = torch.stack(list(at_eps.values()))
        if self.draws == 1:
            return values.min(dim=0).values
        names = [k for k in at_eps if k in self.crafted]
        stacked = torch.stack([at_eps[k] for k in names])
        pick = stacked.argmin(dim=0)
        chosen = torch.stack([self.crafted[k] for k in names])[pick, torch.arange(len(pick))]
        fresh = self.score(chosen)
        best_single = min(values, key=lambda v: float(v.mean()))  # never report more than one attack showed
        return fresh if float(fresh.mean()) <= float(best_single.mean()) else best_single

    def score(self, x_adv: torch.Tensor) -> torch.Tensor:
        return fixes.robust_fraction(self.model, x_adv.to(self.device), self.y, draws=self.draws,
                                     batch_size=self.batch_size)

    def attack(self, name, attack, eps, through=None) -> torch.Tensor | None:
        """Per-sample robust fraction of ``attack`` crafted on ``through`` (default the model), scored on the model;
        None when the attack could not run (recorded)."""
        from gibbon.attacks.run import run_attack

        try:
            result = run_attack(through if through is not None else self.model, self.subset, attack, eps=eps,
                                batch_size=self.batch_size, seed=self.seed, device=self.device, progress=self.progress)
        except GibbonInputError:
            raise
        except Exception as err:  # noqa: BLE001 - no gradient path, a model raising inside autograd, ...
            self.attack_errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            return None
        self.crafted[name] = result.x_adv.detach().cpu()
        return self.score(result.x_adv)


def diagnose(model, data, *, eps: float, n: int = 500, batch_size: int = 250, seed: int = 0, device="cpu",
             square_queries: int = 1000, transfer_from=None, substitute: bool = False, probe_samples: int = 200,
             remedies="auto", suite: str | None = "reliable", progress: bool = False) -> Diagnosis:
    """Run the gradient-masking checks and the remedies they call for on the first ``n`` samples.

    Args:
        model: ``x -> scores`` (tensor, tuple, dict or ``.logits`` output; logits or probabilities).
        data: a :class:`gibbon.data.Dataset`; its ``bounds`` are the input box.
        eps: the L-infinity budget the defense claims, in ``(0, high - low]``.
        n: samples attacked. batch_size: attack mini-batch. seed: all randomness.
        square_queries: Square's per-sample query budget (the gradient-free check).
        transfer_from: an optional separately trained model; PGD-100 crafted on it is sent to ``model``.
        substitute: also run Papernot's substitute attack (150 seed images taken after the
            first ``n``, 3 augmentations, 1,200 labels) with ``model`` as a label-only oracle (minutes).
        probe_samples: samples the gradient, finite-difference and randomness probes use.
        remedies: ``"auto"`` (each remedy where a check calls for it), ``"none"``, or names from
            :data:`gibbon.evaluation.remedies.REMEDIES` (comma-separated or a list).
        suite: an attack suite (``"reliable"``: AutoAttack's) run as ``evaluate(..., suite=suite)``
            runs it and folded into the adaptive worst case, which is then never above the suite's
            (deterministic models; None: skip).

    Returns:
        A :class:`Diagnosis` with ``verdict``, ``findings``, ``accuracies``, ``remedies`` and
        ``adaptive_robust_accuracy``.

    Example:
        >>> from gibbon.data import load
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        >>> report = diagnose(net, load("digits", "test"), eps=0.1, n=20, square_queries=20, suite=None)
        >>> report.verdict in ("no sign of masking", "masking suspected"), 0 <= report.adaptive_robust_accuracy <= 1
        (True, True)
    """
    chosen = fixes.parse_remedies(remedies)
    low, high = (float(b) for b in data.bounds)
    width = high - low
    if not (isinstance(eps, (int, float)) and 0 < eps <= width):
        raise GibbonInputError(f"eps must be in (0, {width:g}] (the budget the defense claims, inside the input box "
                               f"{data.bounds}), got {eps!r}")
    if n < 1 or len(data) < 1:
        raise GibbonInputError(f"need at least one sample to diagnose (n={n}, dataset has {len(data)})")
    if suite is not None:
        from gibbon.evaluation.suites import suite_attacks

        suite_attacks(suite)  # fail fast on an unknown name
    start = time.perf_counter()
    scores = model if isinstance(model, Scores) else Scores(model)
    x, y = data.x[:n].to(device), data.y[:n].to(device)
    was_training = scores.training
    scores.eval()
    try:
        outputs = _output_probe(scores, x[:probe_samples], data.num_classes)
        randomness = probes.randomness_probe(scores, x[:probe_samples])
        draws = fixes.SCORING_DRAWS if randomness["random"] else 1
        run = _Run(scores, data, x, y, batch_size=batch_size, seed=seed, device=device, draws=draws, progress=progress)
        at_eps, accuracies = _check_attacks(run, eps=eps, width=width, square_queries=square_queries,
                                            transfer_from=transfer_from, substitute=substitute, n=n)
        grads, fd = _gradient_probes(run, randomness, eps=eps, bounds=(low, high), probe_samples=probe_samples)
        findings = (checks.ordering_findings(accuracies) + [
            checks.single_step_far_weaker_finding(accuracies), checks.random_step_finding(accuracies),
            checks.black_box_finding(accuracies), checks.unbounded_finding(accuracies),
            checks.monotone_finding(accuracies), checks.gradient_finding(grads), checks.finite_difference_finding(fd),
            checks.randomness_finding(randomness), checks.probabilities_finding(outputs)])
        applied = apply_remedies(run, chosen, at_eps, accuracies, eps=eps, grads=grads, fd=fd, outputs=outputs,
                                 randomized=randomness["random"], square_queries=square_queries, n=n)
        if suite is not None and not randomness["random"] and bool(run.worst_case(at_eps).any()):
            # (where the checks broke every sample the suite cannot lower the worst case: skipped)
            at_eps[f"suite {suite}"] = suite_worst_case(run, suite, eps)
            accuracies[f"suite {suite}"] = {**accuracy_entry(at_eps[f"suite {suite}"]), "eps": eps}
        findings.append(checks.model_errors_finding(outputs, scores.errors, scores.failed_samples, run.attack_errors))
        adaptive = accuracy_entry(run.worst_case(at_eps))
    finally:
        scores.train(was_training)
    verdict = SUSPECTED if any(f.flagged for f in findings) else NO_SIGN
    settings = {"eps": eps, "norm": "linf", "n": int(len(y)), "seed": seed, "square_queries": square_queries,
                "dataset": data.name, "split": data.split, "probe_samples": int(min(probe_samples, len(y))),
                "transfer_from": transfer_from is not None, "substitute": substitute, "remedies": list(chosen),
                "suite": suite if not randomness["random"] else None, "scoring_draws": draws,
                "output_kind": scores.output_kind}
    return Diagnosis(verdict, findings, accuracies, settings, time.perf_counter() - start,
                     adaptive["accuracy"], adaptive["interval"], applied)


def _check_attacks(run: _Run, *, eps, width, square_queries, transfer_from, substitute, n) -> tuple[dict, dict]:
    """The checks' attacks: per-sample results at ``eps`` (the worst case's candidates) and every accuracy."""
    clean = run.score(run.x)
    run.keep("clean", run.x)
    accuracies, at_eps = {"clean": accuracy_entry(clean)}, {"clean": clean}
    noise = _random_signs(run.x, eps, run.data.bounds, run.seed)
    run.keep("random noise", noise)
    at_eps["random noise"] = torch.minimum(clean, run.score(noise))
    accuracies["random noise"] = {**accuracy_entry(at_eps["random noise"]), "eps": eps}
    for name, attack, attack_eps in _attacks(eps, width, square_queries):
        robust = run.attack(name, attack, attack_eps)
        robust = clean.clone() if robust is None else torch.minimum(clean, robust)
        accuracies[name] = {**accuracy_entry(robust), "eps": attack_eps}
        if name in run.attack_errors:
            accuracies[name]["error"] = run.attack_errors[name]
        if name not in OFF_EPS:
            at_eps[name] = robust
    extra = []
    if transfer_from is not None:
        extra.append(("transfer PGD-100", _transfer(transfer_from, run, eps), {}))
    if substitute:
        robust, queries = _substitute(run, n, eps)
        extra.append(("substitute FGSM", robust, {"queries": queries}))
    for name, robust, more in extra:
        at_eps[name] = torch.minimum(clean, robust)
        accuracies[name] = {**accuracy_entry(at_eps[name]), "eps": eps, **more}
    return at_eps, accuracies


def _gradient_probes(run: _Run, randomness: dict, *, eps, bounds, probe_samples) -> tuple[dict, dict]:
    """The gradient and finite-difference probes; a randomized model's gradient variance joins ``randomness``."""
    px, py = run.x[:probe_samples], run.y[:probe_samples]
    gen = torch.Generator().manual_seed(run.seed)
    gradient = probes.input_gradient(run.model, px, py)  # one backward pass serves both probes
    grads = probes.gradient_probe(run.model, px, py, eps=eps, bounds=bounds, generator=gen, gradient=gradient)
    fd = probes.finite_difference_probe(run.model, px, py, step=eps / 4, bounds=bounds, generator=gen,
                                        gradient=gradient)
    if randomness["random"]:
        randomness["gradient_variance"] = fixes.gradient_variance(run.model, px[:50], py[:50])
    return grads, fd


def _output_probe(scores: Scores, x: torch.Tensor, classes: int) -> dict:
    """What the model returns: its kind, whether it looks like probabilities, non-finite rows.
    A wrong shape is the caller's error (one line), not a finding."""
    with torch.no_grad():
        out = scores(x)
    if out.shape[1] < classes:
        raise GibbonInputError(f"the model returns {out.shape[1]} scores per input but the data has {classes} "
                               "classes; it must return one score per class")
    return {"kind": scores.output_kind, "probabilities": looks_like_probabilities(out),
            "nonfinite_samples": int((~torch.isfinite(out).all(dim=1)).sum())}


def _random_signs(x: torch.Tensor, eps: float, bounds, seed: int) -> torch.Tensor:
    from gibbon.transfer.matrix import random_perturbation

    gen = torch.Generator().manual_seed(seed + 17)
    return random_perturbation(x.cpu(), eps, "linf", bounds=bounds, generator=gen).to(x.device)


def _transfer(source, run: _Run, eps) -> torch.Tensor:
    from gibbon.attacks import PGD
    from gibbon.attacks.run import run_attack

    crafted = run_attack(source, run.subset, PGD(steps=100), eps=eps, batch_size=run.batch_size, seed=run.seed,
                         device=run.device, progress=False)
    run.keep("transfer PGD-100", crafted.x_adv)
    return run.score(crafted.x_adv)


def _substitute(run: _Run, n, eps):
    from gibbon import zoo
    from gibbon.attacks import FGSM
    from gibbon.oracles import Oracle
    from gibbon.transfer import train_substitute
    from gibbon.transfer._batches import craft

    data = run.data
    seeds = data.x[n:n + 150]
    if len(seeds) < 10:
        raise GibbonInputError(f"the substitute check needs >= 10 seed images after the first n={n}; use a smaller n")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed)
        sub = zoo.build("mlp-200-200", data).to(run.device)
    oracle = Oracle(run.model, output="label")
    trained = train_substitute(oracle, seeds.to(run.device), sub, rounds=3, seed=run.seed, classes=data.classes,
                               bounds=data.bounds)
    adv = craft(trained.substitute, FGSM(), run.x, run.y, eps=eps, norm="linf", bounds=data.bounds, batch_size=500,
                seed=run.seed)
    run.keep("substitute FGSM", adv)
    return run.score(adv), trained.queries

