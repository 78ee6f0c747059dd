"""Experiment files: one YAML describes models, data, attacks, the eps grid, defenses and outputs
(:func:`load_experiment`, validated by pydantic), and :func:`run_experiment` evaluates it with resume."""

from gibbon.experiments.config import Experiment, load_experiment
from gibbon.experiments.runner import run_experiment

__all__ = ["Experiment", "load_experiment", "run_experiment"]
