"""The defense registry: one name -> one frozen config class, parsed from ``NAME:key=value,...``.

A defense config is a frozen dataclass of hyper-parameters. :meth:`DefenseConfig.objective`
turns it into a training objective ``objective(model, x, y) -> loss`` for
:func:`gibbon.zoo.fit`; :meth:`DefenseConfig.fit` trains a model with it (defenses that need
more than one objective, like distillation's teacher-then-student, override ``fit``). The names
are what ``gibbon train --defense NAME:key=value`` takes (``zoo.trained(..., defense=...)`` takes
the parsed config: the zoo sits below the defenses and never parses a spec itself), and
:meth:`DefenseConfig.spec` is the canonical string written to the model card and the cache key.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

from gibbon.core.specs import dataclass_defaults, parse_options, split_spec

DEFENSES: dict[str, type] = {}


class DefenseConfig:
    """Mixin for registered defense configs.

    Attributes (class-level):
        name: registry name.
        paper: the citation the card records.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""

    def params(self) -> dict:
        """Hyper-parameters as a JSON-ready dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def spec(self) -> str:
        """Canonical ``NAME:key=value,...`` with every hyper-parameter (sorted), for cards and cache keys.

        Example:
            >>> from gibbon.defenses import parse_defense
            >>> parse_defense("fgsm:eps=0.25").spec()
            'fgsm:clean_weight=0.5,craft_labels=true,eps=0.25'
        """
        items = ",".join(f"{k}={v}" for k, v in sorted(self.params().items()))
        return f"{self.name}:{items}" if items else self.name

    def objective(self, train) -> Callable:
        """The training objective ``objective(model, x, y) -> loss`` (or ``(loss, logits)``) on
        data like ``train`` (a :class:`gibbon.data.Dataset`: its ``bounds`` and, for
        semi-supervised defenses, its labels)."""
        raise NotImplementedError(f"{type(self).__name__} must define objective() or override fit()")

    def fit(self, model, train, **fit_kwargs):
        """Train ``model`` in place with this defense; returns :class:`gibbon.zoo.training.FitResult`.

        ``fit_kwargs`` are :func:`gibbon.zoo.fit`'s (epochs, lr, val, seed, checkpoint_dir, ...).
        """
        from gibbon.zoo.training import fit

        return fit(model, train, objective=self.objective(train), **fit_kwargs)

    def card(self) -> dict:
        """What the model card records about the defense."""
        return {"name": self.name, "spec": self.spec(), "params": self.params(), "paper": self.paper}

    def privacy(self, history: list[dict]) -> dict | None:
        """What the card records of the privacy a training run spent (None: not a private training)."""
        return None

    def trained_card(self, result) -> dict:
        """The card fields of a model this defense trained (``result``: what :meth:`fit` returned).

        ``gibbon train --defense`` and :func:`gibbon.zoo.trained` both write these, so the zoo
        records a defended model without importing the defenses."""
        return {"defense": self.card(), "early_stopped": result.early_stopped, "kept_epoch": result.kept_epoch,
                "privacy": self.privacy(result.history)}


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a defense config class to :data:`DEFENSES` under ``name``."""

    def wrap(cls: type) -> type:
        if name in DEFENSES:
            raise ValueError(f"defense {name!r} is registered twice")
        cls.name = name
        DEFENSES[name] = cls
        return cls

    return wrap


def parse_defense(spec) -> DefenseConfig:
    """Build a config from ``"NAME"`` or ``"NAME:key=value,key=value"`` (a config passes through).

    Example:
        >>> parse_defense("pgd:eps=0.3,steps=10").steps
        10
    """
    if isinstance(spec, DefenseConfig):
        return spec
    name, rest = split_spec(spec, DEFENSES, "defense")
    cls = DEFENSES[name]
    return cls(**parse_options(rest, dataclass_defaults(cls), kind="defense", name=name))
