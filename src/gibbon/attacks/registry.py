"""The attack registry: one name -> one frozen config class, parsed from ``NAME:key=value,...``.

A config class is a frozen dataclass of hyper-parameters whose ``__call__(model, x, y, *,
eps, norm, target, bounds, generator)`` forwards to the attack function. Registering a class
puts it under the contract test suite at once (tests/attacks/test_contract.py).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

from gibbon.core.checks import GibbonInputError

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


def _coerce(value: str, like):
    """Turn a CLI string into the type of the field's default (bool, int, float, str, None)."""
    lowered = value.lower()
    if isinstance(like, bool):
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {value!r}")
    if lowered == "none":
        return None
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float) or like is None:
        try:
            return float(value)
        except ValueError:
            if like is None:
                return value
            raise
    return value


def parse_attack(spec: str):
    """Build a config from ``"NAME"`` or ``"NAME:key=value,key=value"``.

    Example:
        >>> parse_attack("pgd:steps=100,restarts=10").steps
        100
    """
    name, _, rest = spec.partition(":")
    name = name.strip().lower()
    if name not in ATTACKS:
        raise GibbonInputError(f"unknown attack {name!r}; available: {', '.join(sorted(ATTACKS))}")
    cls = ATTACKS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in fields:
            raise GibbonInputError(
                f"bad option {item!r} for attack {name!r}; options are: {', '.join(fields) or 'none'}"
            )
        field = fields[key]
        default = field.default if field.default is not dataclasses.MISSING else None
        try:
            kwargs[key] = _coerce(value.strip(), default)
        except ValueError as err:
            raise GibbonInputError(f"bad value for {name}:{key}: {err}") from None
    return cls(**kwargs)
