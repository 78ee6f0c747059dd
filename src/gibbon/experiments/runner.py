"""Run an :class:`~gibbon.experiments.config.Experiment`: every model under the same attacks and eps grid.

Each model's evaluation checkpoints after every (attack, eps) unit
(``output/checkpoints/NAME.json``, :func:`gibbon.evaluation.evaluate`'s resume file), so a
killed run started again recomputes nothing it finished. Its report goes to ``output/NAME.json``
(atomically) and the table of every model to ``output/summary.json``.
"""

from __future__ import annotations

from pathlib import Path

from gibbon.core.checks import GibbonInputError, resolve_device


def load_model(spec, device: str):
    """The model a :class:`~gibbon.experiments.config.ModelConfig` names, on ``device``."""
    from gibbon import zoo

    if spec.path is not None:
        return zoo.load(spec.path, device=device, trust_code=spec.trust_code).eval()
    z = spec.zoo
    defense = None
    if z.defense is not None:
        from gibbon.defenses import parse_defense

        defense = parse_defense(z.defense)
    path = zoo.trained(z.arch, z.dataset, epochs=z.epochs, seed=z.seed, batch_size=z.batch_size, lr=z.lr,
                       optimizer=z.optimizer, schedule=z.schedule, defense=defense)
    return zoo.load(path, device=device).eval()


def run_experiment(experiment, *, progress: bool = True, echo=print, executor=None, batches_per_shard: int = 1) -> dict:
    """Evaluate every model of ``experiment``; returns the summary written to ``output/summary.json``.

    ``executor`` (e.g. :class:`gibbon.evaluation.RayExecutor`, entered by the caller): every
    model's (attack, eps, shard) pieces go to its workers as one pool, saved one file each under
    ``output/checkpoints/NAME.shards/``; the reports are the same as in one process.
    """
    from gibbon import data as gdata
    from gibbon.attacks import parse_attack
    from gibbon.evaluation import evaluate, evaluate_many
    from gibbon.evaluation.inputs import resolve_attacks
    from gibbon.evaluation.suites import suite_attacks
    from gibbon.zoo.io import write_json

    configs = [parse_attack(s) for s in (suite_attacks(experiment.suite) if experiment.suite else [])
               + list(experiment.attacks)]
    resolve_attacks(configs, experiment.norm, targeted=experiment.target is not None)  # fail before any work
    if not experiment.eps and not all(c.minimal for c in configs):
        raise GibbonInputError("the experiment's attacks need an 'eps' grid (e.g. eps: [0.1, 0.3])")
    device = resolve_device(experiment.device)
    d = experiment.data
    data = gdata.load(d.dataset, d.split, n=d.n)
    out = Path(experiment.output)
    summary = {"name": experiment.name, "config": experiment.model_dump(mode="json"), "models": {}}
    jobs = [dict(model=load_model(spec, device), data=data, attacks=configs, eps=experiment.eps,
                 norm=experiment.norm, cascade=experiment.cascade or experiment.suite is not None,
                 batch_size=experiment.batch_size, seed=experiment.seed, device=device,
                 checkpoint=out / "checkpoints" / f"{spec.name}.json", target=experiment.target)
            for spec in experiment.models]
    if executor is None:
        reports = [evaluate(**job, progress=progress) for job in jobs]
    else:
        reports = evaluate_many(jobs, executor, progress=progress, batches_per_shard=batches_per_shard)
    for spec, report in zip(experiment.models, reports):
        report.to_json(out / f"{spec.name}.json")
        echo(f"{spec.name}:")
        echo(report.table())
        summary["models"][spec.name] = {
            "clean_accuracy": report.clean_accuracy,
            "robust_accuracy": {f"{r.attack}@{r.eps:g}": r.robust_accuracy for r in report.results},
            "worst_case": {f"{w.eps:g}": w.robust_accuracy for w in report.worst_case},
        }
        if "shards" in report.config:
            summary["models"][spec.name]["shards"] = report.config["shards"]
    write_json(out / "summary.json", summary)
    return summary
