"""``NAME:key=value,...`` specs, the one syntax of attacks, defenses and transforms on the command line."""

from __future__ import annotations

import dataclasses

from gibbon.core.checks import GibbonInputError


def coerce(value: str, like):
    """Turn a CLI string into the type of the default ``like`` (bool, int, float, str, None).

    Example:
        >>> coerce("10", 1), coerce("true", False), coerce("0.5", None), coerce("rbf", "linear")
        (10, True, 0.5, 'rbf')
    """
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


def split_spec(spec: str, known, kind: str) -> tuple[str, str]:
    """``"pgd:steps=10"`` -> ``("pgd", "steps=10")``, the name lower-cased and checked against ``known``."""
    name, _, rest = str(spec).partition(":")
    name = name.strip().lower()
    if name not in known:
        raise GibbonInputError(f"unknown {kind} {name!r}; available: {', '.join(sorted(known))}")
    return name, rest


def parse_options(rest: str, defaults: dict, *, kind: str, name: str) -> dict:
    """``"steps=10,random-start=false"`` -> keyword arguments typed like ``defaults`` (option -> default).

    Example:
        >>> parse_options("steps=10,random-start=false", {"steps": 40, "random_start": True}, kind="attack", name="pgd")
        {'steps': 10, 'random_start': False}
    """
    kwargs = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or key not in defaults:
            raise GibbonInputError(
                f"bad option {item!r} for {kind} {name!r}; options are: {', '.join(defaults) or 'none'}"
            )
        try:
            kwargs[key] = coerce(value.strip(), defaults[key])
        except ValueError as err:
            raise GibbonInputError(f"bad value for {name}:{key}: {err}") from None
    return kwargs


def dataclass_defaults(cls) -> dict:
    """Option -> default of a config dataclass (None where a field has no default)."""
    return {f.name: (f.default if f.default is not dataclasses.MISSING else None) for f in dataclasses.fields(cls)}
