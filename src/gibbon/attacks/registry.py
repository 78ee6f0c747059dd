"""The attack registry: one name -> one frozen config class, parsed from ``NAME:key=value,...``.

A config class is a frozen dataclass of hyper-parameters whose ``__call__(model, x, y, *,
eps, norm, target, bounds, generator)`` forwards to the attack function. Registering a class
puts it under the contract test suite at once (tests/attacks/test_contract.py).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

from gibbon.core.specs import dataclass_defaults, parse_options, split_spec

ATTACKS: dict[str, type] = {}


class AttackConfig:
    """Mixin for registered configs: class-level facts the evaluator and CLI rely on.

    Attributes (class-level):
        name: registry name.
        norms: norms the method defines (the CLI rejects any other with a clear message).
        minimal: True for minimal-perturbation attacks (eps ignored for crafting, scored at each eps).
        randomized: True when the output depends on ``generator``.
        targeted_only: True when the method needs a target class.
        black_box: True when the method only queries scores (never a gradient) and honours
            ``max_queries`` per sample.
    """

    name: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2", "l1")
    minimal: ClassVar[bool] = False
    randomized: ClassVar[bool] = False
    targeted_only: ClassVar[bool] = False
    black_box: ClassVar[bool] = False

    def params(self) -> dict:
        """Hyper-parameters as a JSON-ready dict (for reports and ``repr``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a config class to :data:`ATTACKS` under ``name``."""

    def wrap(cls: type) -> type:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} is registered twice")
        cls.name = name
        ATTACKS[name] = cls
        return cls

    return wrap


def parse_attack(spec: str):
    """Build a config from ``"NAME"`` or ``"NAME:key=value,key=value"``.

    Example:
        >>> parse_attack("pgd:steps=100,restarts=10").steps
        100
    """
    name, rest = split_spec(spec, ATTACKS, "attack")
    cls = ATTACKS[name]
    return cls(**parse_options(rest, dataclass_defaults(cls), kind="attack", name=name))
