"""The adaptive half of :func:`gibbon.evaluation.diagnose.diagnose`: which remedy each finding
calls for, the attacks run through it, and the suite run on what is left.

Order, each step attacking through what the previous ones built:

1. probabilities out -> attack ``log`` of them (``log-probabilities``);
2. zero, cut or shattered gradient -> straight-through gradients (``bpda``), kept if they give
   a usable gradient;
3. randomized forward -> EOT over ``k`` draws, ``k`` from the measured gradient variance (``eot``);
4. saturated softmax or probabilities -> the C&W margin loss (``margin``);
5. still no usable gradient -> Square with five times the queries on the survivors
   (``gradient-free``) and PGD on a surrogate distilled from the model's answers (``surrogate``).

A deterministic model then gets the ``reliable`` suite exactly as ``gibbon evaluate --suite
reliable`` runs it, so the adaptive worst case is never above what that reports.
"""

from __future__ import annotations

import torch
from torch import nn

from gibbon.evaluation import remedies as fixes
from gibbon.evaluation.findings import GRADIENT_FRACTION, accuracy_entry

GRADIENT_ATTACK_STEPS = 100
GRADIENT_FREE_FACTOR = 5


class LogProbabilities(nn.Module):
    """``log`` of a model that returns probabilities: usable logits for the attacks' losses."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).clamp_min(1e-30).log()


def _gradient_attacks(loss: str | None = None, *, early_stop: bool = True):
    """PGD-100, APGD-CE, APGD-DLR (or PGD-100 on ``loss``). A randomized model gets ``early_stop=False``:
    an input that fools one average of draws is pushed on until it fools most fresh ones too."""
    from gibbon.attacks import APGD, PGD

    if loss == "margin":
        return [("PGD-100 margin", PGD(steps=GRADIENT_ATTACK_STEPS, loss="margin", early_stop=early_stop))]
    return [("PGD-100", PGD(steps=GRADIENT_ATTACK_STEPS, early_stop=early_stop)),
            ("APGD-CE", APGD(early_stop=early_stop)), ("APGD-DLR", APGD(loss="dlr", early_stop=early_stop))]


def _worst(at_eps: dict) -> torch.Tensor:
    return torch.stack(list(at_eps.values())).min(dim=0).values


def _survivors(at_eps: dict) -> torch.Tensor:
    return _worst(at_eps) > 0


def _fold(run, at_eps: dict, accuracies: dict, label: str, robust, remedy: str, only=None) -> torch.Tensor | None:
    """Record one remedy attack's per-sample result (``only``: the samples it ran on, the rest keep the worst)."""
    if robust is None:
        accuracies[label] = {**accuracy_entry(at_eps["clean"]), "eps": None, "remedy": remedy,
                             "error": run.attack_errors.get(label, "")}
        return None
    if only is not None:
        full = _worst(at_eps).clone()
        full[only.nonzero().squeeze(1)] = robust
        robust = full
    robust = torch.minimum(at_eps["clean"], robust)
    at_eps[label] = robust
    accuracies[label] = {**accuracy_entry(robust), "remedy": remedy, **({"partial": True} if only is not None else {})}
    return robust


def _apply(run, at_eps, accuracies, applied, *, name, why, attacks, eps, through, only=None):
    reached = []
    for label, attack in attacks:
        full_label = f"{name}: {label}"
        if only is None:
            robust = run.attack(full_label, attack, eps, through=through)
        else:
            sub = run.on(only)
            robust = sub.attack(full_label, attack, eps, through=through)
            if full_label in sub.crafted:
                run.keep(full_label, sub.crafted[full_label], only)
        folded = _fold(run, at_eps, accuracies, full_label, robust, name, only)
        if folded is not None:
            accuracies[full_label]["eps"] = eps
            reached.append(folded)
    if not reached:
        accuracy = float("nan")
    elif run.draws > 1:  # a randomized model: the best attack, not a per-sample minimum of noisy estimates
        accuracy = min(float(r.mean()) for r in reached)
    else:
        accuracy = accuracy_entry(torch.stack(reached).min(dim=0).values)["accuracy"]
    applied.append({"name": name, "why": why, "attacks": [f"{name}: {label}" for label, _ in attacks],
                    "accuracy": accuracy, **({"partial": True} if only is not None else {})})


def shattered(grads: dict, fd: dict) -> bool:
    """A cut or shattered gradient, not a saturated one: zero where the loss is not flat, non-finite,
    or no gradient path at all (a saturated softmax is zero where the loss *is* flat: the margin loss)."""
    samples = max(grads["samples"], 1)
    return (grads["no_gradient_path"] is not None or grads["zero_but_not_flat"] > GRADIENT_FRACTION * samples
            or grads["nonfinite"] > GRADIENT_FRACTION * samples or fd["cut"] is not None
            or fd["autograd_zero_where_loss_moved"] > GRADIENT_FRACTION * max(fd["pairs"], 1))


def apply_remedies(run, chosen, at_eps: dict, accuracies: dict, *, eps, grads, fd, outputs, randomized,
                   square_queries, n) -> list[dict]:
    """Run the remedies in ``chosen`` that the probes call for; updates ``at_eps`` / ``accuracies``
    in place and returns one entry per remedy applied (name, why, attacks, accuracy reached)."""
    applied: list[dict] = []
    samples = max(grads["samples"], 1)
    through = run.model
    if "log-probabilities" in chosen and outputs["probabilities"]:
        through = LogProbabilities(through)
        _apply(run, at_eps, accuracies, applied, name="log-probabilities", why="the model outputs probabilities",
               attacks=_gradient_attacks()[:2], eps=eps, through=through)
    if "bpda" in chosen and shattered(grads, fd):
        through = _bpda(run, at_eps, accuracies, applied, through, eps=eps, randomized=randomized)
    if "eot" in chosen and randomized:
        through = _eot(run, at_eps, accuracies, applied, through, eps=eps)
    saturated = grads["saturated"] / samples > GRADIENT_FRACTION
    if "margin" in chosen and (saturated or outputs["probabilities"]):
        _apply(run, at_eps, accuracies, applied, name="margin",
               why=f"saturated softmax on {grads['saturated']}/{samples} probed samples" if saturated
               else "probability outputs", attacks=_gradient_attacks("margin", early_stop=not randomized), eps=eps,
               through=through)
    if not fixes.usable_gradient(through, run.x[:100], run.y[:100])["usable"]:
        _no_gradient_remedies(run, chosen, at_eps, accuracies, applied, eps=eps, square_queries=square_queries, n=n)
    return applied


def _bpda(run, at_eps, accuracies, applied, through, *, eps, randomized):
    """Straight-through gradients, kept (and returned) when they give a usable gradient."""
    from gibbon.defenses.straight_through import StraightThrough

    straight = StraightThrough(through)
    check = fixes.usable_gradient(straight, run.x[:100], run.y[:100])
    if not check["usable"]:
        applied.append({"name": "bpda", "why": "tried: straight-through gradients reach the input on only "
                        f"{check['nonzero_fraction']:.0%} of the samples (a graph cut outside torch)",
                        "attacks": [], "accuracy": float("nan")})
        return through
    if not randomized:  # a randomized model is attacked through EOT of this, next
        _apply(run, at_eps, accuracies, applied, name="bpda",
               why=f"zero, cut or shattered input gradient; straight-through for {sorted(straight.replaced)}",
               attacks=_gradient_attacks(), eps=eps, through=straight)
    return straight


def _eot(run, at_eps, accuracies, applied, through, *, eps):
    """EOT over as many draws as the measured gradient variance asks for; returns the EOT model."""
    from gibbon.defenses.eot import EOT
    from gibbon.defenses.straight_through import StraightThrough

    variance = fixes.gradient_variance(through, run.x[:50], run.y[:50])
    rel = variance["relative_variance"]
    k = fixes.eot_samples(rel)
    eot = EOT(through, samples=k, batch_size="copy")
    why = (f"randomized forward; gradient relative variance {rel:.3g} -> {k} draws" if rel is not None
           else f"randomized forward; gradient variance not measurable -> {k} draws")
    if isinstance(through, StraightThrough):
        why += " (through straight-through gradients)"
    _apply(run, at_eps, accuracies, applied, name=f"eot-{k}", why=why,
           attacks=_gradient_attacks(early_stop=False)[::2], eps=eps, through=eot)
    return eot


def _no_gradient_remedies(run, chosen, at_eps, accuracies, applied, *, eps, square_queries, n) -> None:
    from gibbon.attacks import PGD, Square

    if "gradient-free" in chosen and bool(_survivors(at_eps).any()):
        queries = GRADIENT_FREE_FACTOR * square_queries
        _apply(run, at_eps, accuracies, applied, name="gradient-free", why="no usable input gradient",
               attacks=[(f"Square-{queries}", Square(max_queries=queries))], eps=eps, through=None,
               only=_survivors(at_eps))
    if "surrogate" in chosen and bool(_survivors(at_eps).any()):
        pool = torch.cat([run.x, run.data.x[n:n + fixes.SURROGATE_POINTS].to(run.device)])
        surrogate = fixes.distill_surrogate(run.model, pool, run.data, seed=run.seed, batch_size=run.batch_size)
        _apply(run, at_eps, accuracies, applied, name="surrogate",
               why=f"no usable input gradient; an MLP distilled on the model's answers to {len(pool)} inputs",
               attacks=[("transferred PGD-100", PGD(steps=GRADIENT_ATTACK_STEPS))], eps=eps, through=surrogate)


def suite_worst_case(run, suite: str, eps: float) -> torch.Tensor:
    """Per-sample robust vector of ``suite`` run exactly as ``evaluate(model, data, suite=suite)`` runs it
    (same samples, batches and seeds), so the adaptive worst case is never above the suite's.

    Running it on the checks' survivors only was cheaper but not exact: on the fast-AT wong-net
    (500 MNIST images, eps 0.3) it left 78.8% where the suite alone leaves 78.6%, because the
    suite's random starts depend on which samples share a batch.
    """
    from gibbon.evaluation.evaluate import evaluate

    report = evaluate(run.model, run.subset, suite=suite, eps=[eps], batch_size=run.batch_size, seed=run.seed,
                      device=run.device, progress=run.progress)
    return (report.clean_correct & report.per_sample[:, 0, :].all(dim=0)).double()
