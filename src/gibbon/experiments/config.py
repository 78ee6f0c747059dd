"""An experiment file: models, data, attacks, the eps grid, defenses and outputs, validated by pydantic.

One YAML (or JSON) file describes a whole robustness evaluation, so it can be versioned,
reviewed and rerun (``gibbon run experiment.yaml``). Every key is checked: an unknown one is an
error that names the nearest valid key, a wrong type says which key and what it takes. Nothing
named in the file is imported or run: models are zoo architectures trained by the zoo's cache,
or saved gibbon models (whose card factory runs only with ``trust_code: true``, the same opt-in
as ``--trust-code``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gibbon.core.checks import GibbonInputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Which images are attacked."""

    dataset: str = "mnist"
    split: Literal["train", "val", "test"] = "test"
    n: Optional[int] = Field(None, ge=1, description="the first n images (all when omitted)")


class ZooModel(_Strict):
    """A zoo architecture, trained once by the zoo's cache (``gibbon.zoo.trained``) and reused."""

    arch: str
    dataset: str = "mnist"
    epochs: int = Field(2, ge=1)
    seed: int = 0
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: str = "adam"
    schedule: Optional[str] = None
    defense: Optional[str] = Field(None, description="a training defense, e.g. 'pgd:eps=0.3' (gibbon train --defense)")


class ModelConfig(_Strict):
    """One model to evaluate: ``zoo`` (trained and cached) or ``path`` (a saved PATH.safetensors)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    zoo: Optional[ZooModel] = None
    path: Optional[Path] = None
    trust_code: bool = False

    @model_validator(mode="after")
    def _one_source(self):
        if (self.zoo is None) == (self.path is None):
            raise ValueError(f"model {self.name!r} needs exactly one of 'zoo' (an architecture to train) or 'path' "
                             "(a saved PATH.safetensors)")
        return self


class Experiment(_Strict):
    """The whole file. ``output`` gets one report per model (``NAME.json``), the resume files
    (``checkpoints/NAME.json``) and ``summary.json``."""

    name: str = "experiment"
    seed: int = 0
    device: Optional[str] = None
    data: DataConfig = DataConfig()
    models: list[ModelConfig] = Field(min_length=1)
    attacks: list[str] = Field(default_factory=list)
    suite: Optional[Literal["reliable", "quick"]] = None
    eps: list[float] = Field(default_factory=list)
    norm: Literal["linf", "l2", "l1", "l0"] = "linf"
    cascade: bool = False
    target: Optional[str] = None
    batch_size: int = Field(250, ge=1)
    output: Path = Path("results/experiment")

    @model_validator(mode="after")
    def _checks(self):
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique (they name the report files), got {names}")
        if not self.attacks and self.suite is None:
            raise ValueError("give 'attacks' (e.g. [pgd]) or a 'suite' (reliable or quick)")
        if any(e < 0 for e in self.eps):
            raise ValueError(f"eps must be >= 0, got {self.eps}")
        return self


def _fields(model: type[BaseModel]) -> list[str]:
    return list(model.model_fields)


_SECTIONS = {"": Experiment, "data": DataConfig, "models": ModelConfig, "zoo": ZooModel}


def _valid_keys(loc: tuple) -> list[str]:
    """The keys valid at ``loc`` (the path of an unknown key, without the key itself)."""
    names = [part for part in loc if isinstance(part, str)]
    section = _SECTIONS.get(names[-1] if names else "", Experiment)
    return _fields(section)


def _explain(error: dict, source: str) -> str:
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc) or "top level"
    if error["type"] == "extra_forbidden":
        key, parent = str(loc[-1]), loc[:-1]
        valid = _valid_keys(parent)
        near = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys here: {', '.join(valid)}"
        return f"{source}: unknown key {where!r}{hint}"
    return f"{source}: {where}: {error['msg']}"


def load_experiment(path) -> Experiment:
    """Read and validate an experiment file (YAML or JSON); every problem is a one-line
    :class:`GibbonInputError` (the first one, with the key's path)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise GibbonInputError(f"experiment file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())  # safe_load: no tags, no objects built from the file
    except yaml.YAMLError as err:
        raise GibbonInputError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise GibbonInputError(f"{path} must hold a mapping of keys (name, data, models, attacks, eps, ...)")
    try:
        return Experiment.model_validate(raw)
    except ValidationError as err:
        raise GibbonInputError(_explain(err.errors()[0], str(path))) from None
