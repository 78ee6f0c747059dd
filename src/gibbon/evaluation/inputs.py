"""Argument handling for :func:`gibbon.evaluation.evaluate`: attacks, eps, data, device, target.

Every check raises :class:`GibbonInputError` with the fix in the message.
"""

from __future__ import annotations

import importlib
import itertools
import math
import platform
from contextlib import contextmanager
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from functools import partial

import numpy as np
import torch
from torch import nn

from gibbon.attacks.registry import parse_attack
from gibbon.core.checks import GibbonInputError, check_attack_inputs, check_bounds, check_eps
from gibbon.data.dataset import Dataset
from gibbon.evaluation.report import jsonable


@dataclass
class AttackSpec:
    """One attack to run: the callable, its report name and parameters, and whether it is minimal."""

    call: object
    name: str
    params: dict
    minimal: bool
    black_box: bool = False


def describe_callable(attack) -> tuple[str, dict]:
    """Report name and parameters of a config instance, a ``functools.partial`` or a function."""
    if isinstance(attack, partial):
        return getattr(attack.func, "name", attack.func.__name__), dict(attack.keywords)
    name = getattr(attack, "name", "") or getattr(attack, "__name__", type(attack).__name__)
    params = attack.params() if hasattr(attack, "params") else {}
    return name, params


def resolve_attacks(attacks, norm: str, targeted: bool) -> list[AttackSpec]:
    """Parse specs, check each attack defines ``norm`` (and gets a target when it needs one)."""
    if isinstance(attacks, str) or callable(attacks):
        attacks = [attacks]
    resolved = []
    for spec in attacks:
        if isinstance(spec, str):
            importlib.import_module("gibbon.attacks")  # registers the built-in attacks
            spec = parse_attack(spec)
        if not callable(spec):
            raise GibbonInputError(f"an attack must be a name like 'pgd:steps=100' or a callable, got {spec!r}")
        name, params = describe_callable(spec)
        target_of = spec.func if isinstance(spec, partial) else spec
        norms = getattr(target_of, "norms", None)
        if norms is not None and norm not in norms:
            raise GibbonInputError(
                f"attack {name} is defined for {', '.join(norms)} only; pass --norm {norms[0]} (norm={norms[0]!r})"
            )
        if getattr(target_of, "targeted_only", False) and not targeted:
            raise GibbonInputError(f"attack {name} is targeted only; pass --target (target='least-likely', 'random' or a class)")
        resolved.append(AttackSpec(spec, name, jsonable(params), bool(getattr(target_of, "minimal", False)),
                                   bool(getattr(target_of, "black_box", False))))
    return resolved


def check_black_box_target(model, attacks: list[AttackSpec]) -> None:
    """A black-box target (an :class:`~gibbon.oracles.Oracle`) refuses gradients: only
    gradient-free attacks can run on it; say so before any work starts."""
    from gibbon.oracles import Oracle

    if isinstance(model, Oracle):
        require_black_box(attacks)


def require_black_box(attacks: list[AttackSpec]) -> None:
    """Raise if any of ``attacks`` needs gradients, naming the black-box attacks to use instead."""
    white = [a.name for a in attacks if not a.black_box]
    if white:
        from gibbon.attacks import ATTACKS

        allowed = ", ".join(sorted(name for name, cls in ATTACKS.items() if getattr(cls, "black_box", False)))
        raise GibbonInputError(
            f"attack {', '.join(white)} needs gradients, and a black-box target (an Oracle) gives none: "
            f"use a black-box attack ({allowed}), or give the attack estimated gradients: "
            "gibbon.oracles.EstimatedGradient(oracle) (CLI: --gradient nes)")


def eps_list(eps, *, all_minimal: bool = False) -> list[float]:
    """One eps or several as a list of distinct finite floats >= 0.

    No eps at all (None or an empty list) is allowed when every attack is minimal: they are
    then scored once, unbounded (``eps = inf``, written ``null`` in JSON).
    """
    if isinstance(eps, torch.Tensor):
        eps = eps.flatten().tolist()
    values = [] if eps is None else list(eps) if isinstance(eps, (list, tuple)) else [eps]
    if not values:
        if all_minimal:
            return [math.inf]
        raise GibbonInputError("pass at least one eps (only minimal attacks can go without)")
    for v in values:
        check_eps(v)
    values = [float(v) for v in values]
    if len(set(values)) != len(values):
        raise GibbonInputError(f"eps values must be distinct, got {values}")
    return values


def unpack_data(data, bounds):
    """``(x, y, bounds, description)`` from a Dataset or an ``(x, y)`` pair, validated."""
    if isinstance(data, Dataset):
        info = {"name": data.name, "split": data.split, "n": len(data), "source": data.source}
        x, y, data_bounds = data.x, data.y, data.bounds
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        info = {"name": "tensors", "split": "", "n": int(x.shape[0]), "source": ""}
        data_bounds = (0.0, 1.0)
    else:
        raise GibbonInputError("data must be a gibbon Dataset or an (x, y) pair of tensors")
    bounds = check_bounds(bounds if bounds is not None else data_bounds)
    info["bounds"] = list(bounds)
    check_attack_inputs(x, y, bounds)
    if x.shape[0] == 0:
        raise GibbonInputError("the data hold no samples; pass at least one")
    return x.detach(), y.detach().long(), bounds, info


def resolve_device(model, device) -> torch.device:
    """The device inputs go to: ``device``, else the model's; never moves the model."""
    tensors = itertools.chain(model.parameters(), model.buffers()) if isinstance(model, nn.Module) else iter(())
    first = next(tensors, None)
    if device is None:
        return first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if first is not None and (first.device.type != device.type or
                              (device.index is not None and first.device.index not in (None, device.index))):
        raise GibbonInputError(f"the model is on {first.device} but device={str(device)!r}; move it with model.to({str(device)!r})")
    return device


@contextmanager
def eval_mode(model):
    """Put every submodule in eval mode; give each its own previous flag back afterwards."""
    flags = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    if isinstance(model, nn.Module):
        model.eval()
    try:
        yield
    finally:
        for module, flag in flags:
            module.training = flag


def versions() -> dict:
    try:
        from importlib.metadata import version

        gibbon_version = version("gibbon")
    except Exception:  # noqa: BLE001 - not installed: running from a source tree
        gibbon_version = "unknown"
    return {"gibbon": gibbon_version, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def describe_model(model) -> dict:
    desc = {"class": type(model).__name__}
    if isinstance(model, nn.Module):
        desc["parameters"] = int(sum(p.numel() for p in model.parameters()))
    card = getattr(model, "gibbon_card", None)
    if card is not None:
        if is_dataclass(card) and not isinstance(card, type):
            card = asdict(card)
        elif hasattr(card, "to_dict"):
            card = card.to_dict()
        desc["card"] = jsonable(card)
    return desc


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_oracle_fits(oracle, data) -> None:
    """A served model states its input shape: compare it for free; other black boxes are probed like models."""
    shape = getattr(getattr(oracle, "model", None), "info", {}).get("input_shape")
    if shape is None:
        return check_model_fits(oracle, data)
    if tuple(shape) != tuple(data.x.shape[1:]):
        raise GibbonInputError(f"the server takes inputs shaped {tuple(shape)} but {data.name} images are "
                               f"{tuple(data.x.shape[1:])}; pick the dataset the served model was trained on")


def check_model_fits(model, data) -> None:
    """Two inputs of ``data`` through ``model``: a wrong input shape or too few outputs is a one-line error."""
    from gibbon.evaluation.adapters import scores_of

    params = list(model.parameters()) if hasattr(model, "parameters") else []
    with torch.no_grad():
        try:
            logits = scores_of(model(data.x[:2].to(params[0].device if params else "cpu")))
        except (RuntimeError, ValueError, TypeError) as err:
            raise GibbonInputError(
                f"the model does not accept {data.name} inputs of shape {tuple(data.x.shape[1:])} "
                f"({str(err).splitlines()[0]}); pick the dataset the model was trained on"
            ) from None
    if logits.ndim != 2 or logits.shape[1] < data.num_classes:
        raise GibbonInputError(
            f"the model outputs shape {tuple(logits.shape)}, but {data.name} has {data.num_classes} classes"
        )
