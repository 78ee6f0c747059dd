"""``gibbon run experiment.yaml``: every model of an experiment file under its attacks and eps grid."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

out = Console()


def run(config: Path = typer.Argument(..., help="The experiment file (YAML or JSON; see examples/mnist.yaml).")):
    """Run an experiment file: models, data, attacks, eps grid and outputs; a killed run resumes."""
    from gibbon.experiments.config import load_experiment
    from gibbon.experiments.runner import run_experiment

    experiment = load_experiment(config)
    run_experiment(experiment, echo=out.print)
    out.print(f"reports and summary.json written to {experiment.output}", soft_wrap=True)
