"""``gibbon run experiment.yaml``: every model of an experiment file under its attacks and eps grid."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

out = Console()


def run(
    config: Path = typer.Argument(..., help="The experiment file (YAML or JSON; see examples/mnist.yaml)."),
    ray: bool = typer.Option(False, "--ray", help="Fan the (model, attack, eps, shard) pieces out as Ray tasks "
                             "(pip install 'gibbon[ray]'); a local Ray unless --address. Same numbers."),
    address: Optional[str] = typer.Option(None, "--address", help="A running Ray cluster: auto or ray://HOST:PORT "
                                          "(implies --ray)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="CPUs of the local Ray (implies --ray; default: "
                                          "all of this machine's)."),
    batches_per_shard: int = typer.Option(1, "--batches-per-shard", help="Mini-batches per Ray task (--ray)."),
):
    """Run an experiment file: models, data, attacks, eps grid and outputs; a killed run resumes."""
    from gibbon.evaluation.distributed import make_executor
    from gibbon.experiments.config import load_experiment
    from gibbon.experiments.runner import run_experiment

    experiment = load_experiment(config)
    executor = make_executor(ray, address, workers)
    if executor is None:
        run_experiment(experiment, echo=out.print)
    else:
        with executor:
            summary = run_experiment(experiment, echo=out.print, executor=executor,
                                     batches_per_shard=batches_per_shard)
        done = [m["shards"] for m in summary["models"].values()]
        out.print(f"{sum(d['computed'] for d in done)} shards computed on {executor.workers} Ray workers, "
                  f"{sum(d['resumed'] for d in done)} resumed from an earlier run")
    out.print(f"reports and summary.json written to {experiment.output}", soft_wrap=True)
