"""Robust accuracy of a model under a list of attacks at several eps, with the per-sample worst case.

Threat model: whatever the attacks define (white- or black-box), one norm (linf, l2, l1, l0),
untargeted unless ``target`` is given. Budget attacks are run at each eps; minimal-perturbation
attacks (``minimal=True``) once, then scored at each eps from their per-sample distances.

A sample is *robust* to an attack at eps when it is classified correctly on the clean input and
the attack's output (checked to lie in the eps-ball and the input box) is not adversarial. It is
robust in the *worst case* when it is robust to every attack. Samples misclassified on the clean
input are never attacked. With ``cascade=True``, each attack only sees the samples every earlier
attack failed on (AutoAttack's scheme): the worst case is the same, the per-attack numbers are
cumulative.

References:
    Carlini et al. (2019), "On Evaluating Adversarial Robustness", arXiv:1902.06705.
    Croce & Hein (2020), "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", arXiv:2003.01690 (the cascade, per-sample worst case).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gibbon.attacks._common import resolve_target
from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import get_norm
from gibbon.evaluation.adapters import Scores
from gibbon.evaluation.checkpoint import Checkpoint, fingerprint
from gibbon.evaluation.inputs import (
    check_black_box_target, describe_model, eps_list, eval_mode, now, resolve_attacks, resolve_device,
    unpack_data, versions,
)
from gibbon.evaluation.report import Report, Result, WorstCase, eps_to_json, jsonable
from gibbon.evaluation.runner import SEED_SCHEME, ProgressBar, Runner, run_cascade, run_each
from gibbon.evaluation.sanity import BUDGET_SANITY_SAMPLES, SANITY_SAMPLES, attack_checks, model_checks, result_checks
from gibbon.evaluation.stats import wilson_interval
from gibbon.evaluation.suites import suite_attacks
from gibbon.oracles import Oracle


def evaluate(model, data, attacks=None, eps=None, *, norm: str = "linf", cascade: bool = False,
             batch_size: int = 250, seed: int = 0, device=None, checkpoint=None, progress: bool = True, target=None,
             bounds=None, suite: str | None = None, executor=None, batches_per_shard: int = 1) -> Report:
    """Clean and robust accuracy of ``model`` under ``attacks`` at each ``eps``, with the worst case.

    Each attack call gets a fresh ``torch.Generator(device="cpu")`` seeded with
    ``seed + 1000 * batch_index + attack_index`` (``batch_index`` counts the mini-batches of the
    samples that attack sees in one unit), so two runs with the same arguments give the same
    report up to timings. Mini-batching happens here; attacks always get a whole batch.

    Args:
        model: ``nn.Module`` mapping inputs to logits. Put in eval mode for the evaluation; every
            submodule's training flag is restored afterwards.
        data: a :class:`gibbon.data.Dataset`, or an ``(x, y)`` pair of tensors.
        attacks: attack configs (instances of registered classes, or any callable with the attack
            signature) or specs like ``"pgd:steps=100"``.
        eps: one budget or a list of budgets (each >= 0). May be empty (or None) when every
            attack is minimal: they are then scored unbounded, at ``eps = inf``.
        norm: threat model, ``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"``.
        cascade: attack, at each eps, only the samples still robust to the attacks before
            (faster; per-attack results become cumulative and are marked ``partial``).
        batch_size: samples per attack call.
        seed: base seed of the attack generators (see above).
        device: where inputs go; default the model's device.
        checkpoint: path of a JSON file saving progress after each (attack, eps) unit; a rerun
            with the same configuration resumes, a different one starts over with a warning.
            The file is kept when the evaluation ends (rerunning then attacks nothing).
        progress: show a rich progress bar.
        target: None (untargeted), a class id, ``"least-likely"``, ``"random"`` or a label
            tensor ``[N]``; a sample whose target is its own label cannot be broken.
        bounds: valid input range; default the dataset's (``(0, 1)`` for tensor pairs).
        suite: a named attack suite (``"reliable"``: AutoAttack's ensemble, ``"quick"``; see
            :mod:`gibbon.evaluation.suites`) run before ``attacks``; implies ``cascade=True``.
        executor: None (run here), or an executor of :mod:`gibbon.evaluation.distributed`
            (``RayExecutor()``: local Ray or a cluster; ``LocalExecutor()``): the evaluation is cut
            into shards of ``batches_per_shard`` mini-batches (one eps's whole chain under
            ``cascade``), run by the executor's workers and saved one file each beside
            ``checkpoint``; the per-sample results are the same as here.
        batches_per_shard: mini-batches per shard when ``executor`` is given.

    Returns:
        A :class:`Report` with one :class:`Result` per (attack, eps) in attack-major order, one
        :class:`WorstCase` per eps, sanity warnings and the per-sample robust matrix.

    Raises:
        GibbonInputError: bad eps, a norm an attack does not define, inputs outside bounds, ...

    Example:
        >>> from gibbon.evaluation import evaluate
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> x, y = torch.rand(8, 1, 2, 2), torch.zeros(8, dtype=torch.long)
        >>> noop = lambda model, x, y, **kw: x
        >>> report = evaluate(model, (x, y), [noop], eps=[0.1], progress=False)
        >>> report.robust_accuracy("<lambda>", 0.1) == report.clean_accuracy
        True
    """
    plan = prepare_evaluation(model, data, attacks, eps, norm=norm, cascade=cascade, batch_size=batch_size,
                              seed=seed, device=device, checkpoint=checkpoint, target=target, bounds=bounds,
                              suite=suite, sharded=executor is not None)
    if executor is None:
        units = run_in_process(plan, progress)
    else:
        from gibbon.evaluation.distributed import run_sharded

        units = run_sharded([plan], executor, progress=progress, batches_per_shard=batches_per_shard)[0]
    return finish_evaluation(plan, units)


def evaluate_many(jobs: list[dict], executor, *, progress: bool = True, batches_per_shard: int = 1) -> list[Report]:
    """Several evaluations as one pool of shards on ``executor`` (see :func:`evaluate`'s
    ``executor``), so the workers stay busy across models.

    Args:
        jobs: keyword arguments of :func:`evaluate`, one dict per evaluation, each with ``model``
            and ``data`` (``progress`` and ``executor`` are this function's).

    Returns:
        One :class:`Report` per job, in order; the same per-sample numbers as ``evaluate(**job)``.
    """
    from gibbon.evaluation.distributed import run_sharded

    plans = [prepare_evaluation(**job, sharded=True) for job in jobs]
    units = run_sharded(plans, executor, progress=progress, batches_per_shard=batches_per_shard)
    return [finish_evaluation(plan, u) for plan, u in zip(plans, units)]


@dataclass
class Plan:
    """An evaluation checked and ready to run: the model's clean predictions, sanity warnings,
    resolved attacks and eps, the :class:`Runner` and the checkpoint's fingerprint."""

    model: object
    chosen: list
    eps_values: list
    norm: str
    clean: torch.Tensor
    runner: Runner
    fingerprint: dict
    checkpoint: object
    cascade: bool
    warnings: list
    config: dict
    dataset_info: dict
    seed: int
    started: str


def prepare_evaluation(model, data, attacks=None, eps=None, *, norm: str = "linf", cascade: bool = False,
                       batch_size: int = 250, seed: int = 0, device=None, checkpoint=None, target=None,
                       bounds=None, suite: str | None = None, sharded: bool = False) -> Plan:
    """Everything :func:`evaluate` does before its first attack (arguments as there): checks,
    clean predictions, model checks. ``sharded``: the plan will run as shards on other
    processes (:mod:`gibbon.evaluation.distributed`), which a shared query budget cannot."""
    started = now()
    try:
        norm_obj = get_norm(norm)
    except ValueError as err:
        raise GibbonInputError(str(err)) from None
    if suite is not None:
        extra = [attacks] if isinstance(attacks, str) or callable(attacks) else list(attacks or [])
        attacks = suite_attacks(suite) + extra
        cascade = True
    if not attacks:
        raise GibbonInputError("pass at least one attack (e.g. ['pgd']) or a suite (suite='reliable')")
    chosen = resolve_attacks(attacks, norm_obj.name, targeted=target is not None)
    check_black_box_target(model, chosen)
    eps_values = eps_list(eps, all_minimal=bool(chosen) and all(a.minimal for a in chosen))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GibbonInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    x, y, bounds, dataset_info = unpack_data(data, bounds)
    device = resolve_device(model, device)
    n = int(x.shape[0])
    model = _as_scores(model, x[:1], device)

    with eval_mode(model):
        runner = Runner(model, x, y, None, norm_obj, bounds, batch_size, seed, device, ProgressBar(False, 0))
        if sharded and runner.budget is not None:
            raise GibbonInputError("a black box with a shared query budget cannot be split across workers (each "
                                   "would spend the whole budget); evaluate it in one process, without --ray")
        # under a shared query budget the checks stay cheap: a few samples, no estimated gradients
        checked = SANITY_SAMPLES if runner.budget is None else min(SANITY_SAMPLES, BUDGET_SANITY_SAMPLES)
        if runner.budget is not None and (left := runner.budget.total_remaining()) < n + 2 * min(checked, n):
            raise GibbonInputError(f"the black box's query budget has {left} queries left, fewer than the {n} clean "
                                   f"predictions and {2 * min(checked, n)} model checks needed before any attack; "
                                   "give a larger budget or fewer samples")
        logits = runner.predict(torch.arange(n))
        if logits.ndim != 2 or int(y.max()) >= logits.shape[1]:
            raise GibbonInputError(f"the model returns shape {tuple(logits.shape[1:])} per sample but labels go up "
                                   f"to {int(y.max())}; it must return one logit per class")
        clean = logits.argmax(dim=1) == y
        runner.target = resolve_target(target, logits, y, seed)
        warnings = model_checks(model, x[:checked].to(device), y[:checked].to(device),
                                gradients=not isinstance(model, Oracle) and runner.budget is None)

    fp = fingerprint(attacks=[{"name": a.name, "params": a.params} for a in chosen], eps=eps_values,
                     norm=norm_obj.name, x=x, y=y, seed=seed, cascade=cascade, batch_size=batch_size,
                     bounds=bounds, target=runner.target, model=model)
    config = {
        "attacks": [{"name": a.name, "params": a.params} for a in chosen], "eps": [eps_to_json(e) for e in eps_values],
        "norm": norm_obj.name,
        "cascade": bool(cascade), "batch_size": batch_size, "bounds": list(bounds),
        "target": target if target is None or isinstance(target, (int, str)) else "tensor",
        "device": str(device), "seed_scheme": SEED_SCHEME, "suite": suite,
    }
    return Plan(model=model, chosen=chosen, eps_values=eps_values, norm=norm_obj.name, clean=clean, runner=runner,
                fingerprint=fp, checkpoint=checkpoint, cascade=cascade, warnings=warnings, config=config,
                dataset_info=dataset_info, seed=seed, started=started)


def run_in_process(plan: Plan, progress: bool) -> dict:
    """Run a plan's (attack, eps) units here, one after the other, resuming from its checkpoint file."""
    runner, chosen, eps_values, clean, cascade = plan.runner, plan.chosen, plan.eps_values, plan.clean, plan.cascade
    store = Checkpoint(plan.checkpoint, plan.fingerprint, clean)
    if store.warning:
        plan.warnings.append(store.warning)
    per_unit = runner.batches(int(clean.sum()))
    steps = per_unit * sum(1 if a.minimal and not cascade else len(eps_values) for a in chosen)
    runner.units_left = _units_to_run(chosen, len(eps_values), cascade, store)
    with eval_mode(plan.model), ProgressBar(progress, steps) as bar:
        runner.bar = bar
        run_all = run_cascade if cascade else run_each
        return run_all(runner, chosen, eps_values, clean, store)


def finish_evaluation(plan: Plan, units: dict) -> Report:
    """The :class:`Report` of a plan from its finished ``{(attack, eps): unit}`` results."""
    bounds = plan.runner.bounds
    report = _report(plan.chosen, plan.eps_values, plan.norm, plan.clean, units, plan.cascade, plan.warnings)
    report.warnings.extend(result_checks(report.worst_case, plan.norm, bounds))
    report.warnings.extend(attack_checks(report.results, plan.cascade))
    report.seed, report.versions, report.model = plan.seed, versions(), describe_model(plan.model)
    report.dataset, report.config, report.started, report.finished = (plan.dataset_info, jsonable(plan.config),
                                                                      plan.started, now())
    return report


def _as_scores(model, x_one: torch.Tensor, device):
    """``model`` itself when it returns a tensor; else its :class:`Scores` view (tuple, dict or
    ``.logits`` outputs), so every attack and check sees ``(B, classes)`` scores."""
    if isinstance(model, Oracle) or not isinstance(model, torch.nn.Module):
        return model
    with eval_mode(model), torch.no_grad():
        probe = model(x_one.to(device))
    return model if isinstance(probe, torch.Tensor) else Scores(model)


def _units_to_run(chosen, n_eps: int, cascade: bool, store) -> int:
    """(attack, eps) units not in the checkpoint yet; a minimal attack outside a cascade runs once."""
    count = 0
    for a, attack in enumerate(chosen):
        missing = sum(store.get(a, j) is None for j in range(n_eps))
        count += min(missing, 1) if attack.minimal and not cascade else missing
    return max(count, 1)


def _report(chosen, eps_values, norm: str, clean, units: dict, cascade: bool, warnings: list) -> Report:
    """Results (attack-major), per-sample worst cases and intervals from the finished units."""
    n = len(clean)
    per_sample = torch.zeros(len(chosen), len(eps_values), n, dtype=torch.bool)
    results = []
    for a, attack in enumerate(chosen):
        for j, e in enumerate(eps_values):
            unit = units[(a, j)]
            per_sample[a, j] = unit["robust"]
            warnings.extend(unit["warnings"])
            k = int(unit["robust"].sum())
            results.append(Result(attack=attack.name, params=attack.params, eps=e, norm=norm, robust_accuracy=k / n,
                                  interval=wilson_interval(k, n), seconds=float(unit["seconds"]),
                                  gradients=int(unit["gradients"]), forwards=int(unit["forwards"]),
                                  partial=bool(cascade and a > 0), extra=jsonable(unit["extra"])))
    worst_case = []
    for j, e in enumerate(eps_values):
        k = int((clean & per_sample[:, j].all(dim=0)).sum())
        worst_case.append(WorstCase(eps=e, norm=norm, robust_accuracy=k / n, interval=wilson_interval(k, n)))
    k_clean = int(clean.sum())
    return Report(clean_accuracy=k_clean / n, clean_interval=wilson_interval(k_clean, n), n=n, results=results,
                  worst_case=worst_case, warnings=warnings, clean_correct=clean, per_sample=per_sample)
