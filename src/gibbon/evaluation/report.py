"""The evaluation report: named results, confidence intervals, JSON round trip, a rich table.

Accuracies are fractions in ``[0, 1]`` everywhere (JSON included); intervals are 95% Wilson
score intervals ``(low, high)``. The per-sample robust matrix (attack x eps x sample) is kept
so that worst cases over any subset of attacks can be recomputed later.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

SCHEMA_VERSION = 1
WORST_CASE_NAMES = ("worst case", "worst_case", "worst")


def jsonable(obj):
    """A JSON-ready copy of ``obj``: tuples become lists, unknown objects their ``repr``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor) and obj.numel() <= 16:
        return jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        try:
            return jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if callable(obj) and hasattr(obj, "__name__"):
        return obj.__name__
    return repr(obj)


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and ``os.replace``.

    A reader (or a crash) never sees a half-written file: the old content stays until the new
    one is complete on disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def bits_to_str(mask: torch.Tensor) -> str:
    """A bool vector as a compact ``"0110..."`` string (one character per sample)."""
    return (mask.detach().cpu().numpy().astype(np.uint8) + ord("0")).tobytes().decode("ascii")


def str_to_bits(text: str) -> torch.Tensor:
    """Inverse of :func:`bits_to_str`."""
    return torch.from_numpy(np.frombuffer(text.encode("ascii"), dtype=np.uint8) == ord("1"))


def eps_to_json(eps: float):
    """``eps`` for JSON: ``null`` stands for unbounded (``inf``, minimal attacks without a budget)."""
    return None if math.isinf(eps) else float(eps)


def eps_from_json(value) -> float:
    return math.inf if value is None else float(value)


def _interval(value) -> tuple[float, float]:
    low, high = value
    return (float(low), float(high))


def _percent(acc: float, interval) -> str:
    return f"{100 * acc:.1f}% [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


@dataclass
class Result:
    """One attack at one eps.

    Attributes:
        attack: registry name of the attack.
        params: its hyper-parameters (``config.params()``).
        eps: the budget it was scored at (``inf``: unbounded, for minimal attacks run without
            any eps; ``null`` in JSON).
        norm: threat model (``"linf"``, ``"l2"``, ``"l1"``, ``"l0"``).
        robust_accuracy: fraction of all samples correct on the clean input and not fooled.
        interval: 95% Wilson interval of ``robust_accuracy``.
        seconds: wall time of the attack calls (and their verification) for this result.
        gradients: input-gradient rows the attack asked for (see :class:`CountingModel`).
        forwards: rows the attack forwarded through the model.
        partial: True in a cascade: the number is the accuracy after this attack *and the ones
            before it*, not the attack's own accuracy on all samples.
        extra: anything else (``attacked`` samples; distance statistics for minimal attacks).
    """

    attack: str
    params: dict
    eps: float
    norm: str
    robust_accuracy: float
    interval: tuple[float, float]
    seconds: float = 0.0
    gradients: int = 0
    forwards: int = 0
    partial: bool = False
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "attack": self.attack, "params": jsonable(self.params), "eps": eps_to_json(self.eps), "norm": self.norm,
            "robust_accuracy": float(self.robust_accuracy), "interval": list(_interval(self.interval)),
            "seconds": float(self.seconds), "gradients": int(self.gradients), "forwards": int(self.forwards),
            "partial": bool(self.partial), "extra": jsonable(self.extra),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Result:
        return cls(**{**d, "interval": _interval(d["interval"]), "eps": eps_from_json(d["eps"])})


@dataclass
class WorstCase:
    """Per-sample worst case over all attacks at one eps: robust only if robust to every attack."""

    eps: float
    norm: str
    robust_accuracy: float
    interval: tuple[float, float]

    def to_dict(self) -> dict:
        return {"eps": eps_to_json(self.eps), "norm": self.norm, "robust_accuracy": float(self.robust_accuracy),
                "interval": list(_interval(self.interval))}

    @classmethod
    def from_dict(cls, d: dict) -> WorstCase:
        return cls(**{**d, "interval": _interval(d["interval"]), "eps": eps_from_json(d["eps"])})


@dataclass(eq=False)
class Report:
    """Everything one :func:`gibbon.evaluation.evaluate` call measured.

    Attributes:
        schema_version: JSON schema version (1).
        clean_accuracy, clean_interval: accuracy on unperturbed inputs and its Wilson interval.
        n: number of samples.
        seed: the seed the attack generators were derived from.
        versions: gibbon, torch, numpy and python versions.
        model: description (the model card when the model has ``gibbon_card``).
        dataset: name, split, n (and bounds, source).
        config: the evaluation settings (attack specs, eps list, norm, cascade, batch size, ...).
        results: one :class:`Result` per (attack, eps), attack-major.
        worst_case: one :class:`WorstCase` per eps.
        warnings: sanity-check findings (read them before trusting the numbers).
        started, finished: ISO-8601 UTC timestamps.
        clean_correct: ``bool[N]`` per-sample clean correctness (None when not kept).
        per_sample: ``bool[A, E, N]`` robust matrix, attacks x eps x samples, in the order of
            ``config["attacks"]`` and ``config["eps"]`` (None when not kept).
    """

    schema_version: int = SCHEMA_VERSION
    clean_accuracy: float = 0.0
    clean_interval: tuple[float, float] = (0.0, 1.0)
    n: int = 0
    seed: int = 0
    versions: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    worst_case: list[WorstCase] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started: str = ""
    finished: str = ""
    clean_correct: torch.Tensor | None = field(default=None, repr=False)
    per_sample: torch.Tensor | None = field(default=None, repr=False)

    # ----------------------------------------------------------------- serialisation
    def to_dict(self, per_sample: bool = True) -> dict:
        """A JSON-ready dict; ``per_sample=False`` leaves the per-sample matrix out (``null``)."""
        samples = None
        if per_sample and self.per_sample is not None and self.clean_correct is not None:
            samples = {
                "order": "attack, eps, sample",
                "clean": bits_to_str(self.clean_correct),
                "robust": [[bits_to_str(row) for row in attack] for attack in self.per_sample],
            }
        return {
            "schema_version": self.schema_version,
            "started": self.started,
            "finished": self.finished,
            "versions": jsonable(self.versions),
            "model": jsonable(self.model),
            "dataset": jsonable(self.dataset),
            "config": jsonable(self.config),
            "n": int(self.n),
            "seed": int(self.seed),
            "clean_accuracy": float(self.clean_accuracy),
            "clean_interval": list(_interval(self.clean_interval)),
            "results": [r.to_dict() for r in self.results],
            "worst_case": [w.to_dict() for w in self.worst_case],
            "warnings": list(self.warnings),
            "per_sample": samples,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Report:
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"report schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
        samples = d.get("per_sample")
        clean_correct = per_sample = None
        if samples:
            clean_correct = str_to_bits(samples["clean"])
            rows = [[str_to_bits(s) for s in attack] for attack in samples["robust"]]
            n_eps = len(d.get("config", {}).get("eps", [])) or (len(rows[0]) if rows else 0)
            per_sample = (torch.stack([torch.stack(r) for r in rows]) if rows and rows[0]
                          else torch.zeros(len(rows), n_eps, len(clean_correct), dtype=torch.bool))
        return cls(
            schema_version=version, clean_accuracy=d["clean_accuracy"], clean_interval=_interval(d["clean_interval"]),
            n=d["n"], seed=d["seed"], versions=d.get("versions", {}), model=d.get("model", {}),
            dataset=d.get("dataset", {}), config=d.get("config", {}),
            results=[Result.from_dict(r) for r in d.get("results", [])],
            worst_case=[WorstCase.from_dict(w) for w in d.get("worst_case", [])],
            warnings=list(d.get("warnings", [])), started=d.get("started", ""), finished=d.get("finished", ""),
            clean_correct=clean_correct, per_sample=per_sample,
        )

    def to_json(self, path, per_sample: bool = True) -> None:
        """Write the report to ``path`` atomically (temporary file + ``os.replace``)."""
        write_json_atomic(path, self.to_dict(per_sample=per_sample))

    @classmethod
    def from_json(cls, path) -> Report:
        """Load a report written by :meth:`to_json`."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def __eq__(self, other) -> bool:
        if not isinstance(other, Report):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    # ----------------------------------------------------------------- lookups
    def robust_accuracy(self, attack, eps: float, norm: str | None = None) -> float:
        """Robust accuracy of ``attack`` (a name, or ``"worst case"``) at ``eps``.

        Raises:
            KeyError: no such result, or the name matches several attacks (pass the index
                into ``report.config["attacks"]`` then).
        """
        def same_eps(value):
            return math.isclose(value, eps, rel_tol=1e-9, abs_tol=1e-12)

        if isinstance(attack, str) and attack.lower() in WORST_CASE_NAMES:
            found = [w for w in self.worst_case if same_eps(w.eps) and (norm is None or w.norm == norm)]
        elif isinstance(attack, int):
            n_eps = len(self.config.get("eps", [])) or 1
            found = [r for r in self.results[attack * n_eps:(attack + 1) * n_eps]
                     if same_eps(r.eps) and (norm is None or r.norm == norm)]
        else:
            name = attack if isinstance(attack, str) else getattr(attack, "name", str(attack))
            found = [r for r in self.results if r.attack == name and same_eps(r.eps) and (norm is None or r.norm == norm)]
        if len(found) != 1:
            what = "no result" if not found else f"{len(found)} results"
            raise KeyError(f"{what} for attack {attack!r} at eps={eps:g}; available: "
                           f"{sorted({(r.attack, r.eps) for r in self.results})}")
        return found[0].robust_accuracy

    def worst_case_accuracy(self, eps: float, norm: str | None = None) -> float:
        """Worst-case robust accuracy over all attacks at ``eps``."""
        return self.robust_accuracy("worst case", eps, norm)

    # ----------------------------------------------------------------- display
    def table(self):
        """A :class:`rich.table.Table`: one row per attack (and "worst case"), one column per eps."""
        from rich.table import Table

        columns = list(dict.fromkeys((r.norm, r.eps) for r in self.results))
        columns += [c for c in ((w.norm, w.eps) for w in self.worst_case) if c not in columns]
        several_norms = len({c[0] for c in columns}) > 1
        norms = "" if several_norms else f" ({columns[0][0]})" if columns else ""
        table = Table(title=f"Robust accuracy{norms}, n={self.n}, clean {_percent(self.clean_accuracy, self.clean_interval)}")
        table.add_column("attack", style="bold")
        for norm, eps in columns:
            table.add_column(f"{norm} eps={eps:g}" if several_norms else f"eps={eps:g}", justify="right")
        rows: dict[tuple, dict] = {}
        labels: dict[tuple, str] = {}
        for r in self.results:
            key = (r.attack, json.dumps(jsonable(r.params), sort_keys=True))
            labels[key] = f"{r.attack}({', '.join(f'{k}={v}' for k, v in r.params.items())})"
            rows.setdefault(key, {})[(r.norm, r.eps)] = _percent(r.robust_accuracy, r.interval) + ("*" if r.partial else "")
        names = [k[0] for k in rows]
        for key, cells in rows.items():
            label = key[0] if names.count(key[0]) == 1 else labels[key]
            table.add_row(label, *(cells.get(c, "-") for c in columns))
        worst = {(w.norm, w.eps): _percent(w.robust_accuracy, w.interval) for w in self.worst_case}
        table.add_row("worst case", *(worst.get(c, "-") for c in columns), style="bold", end_section=True)
        notes = []
        if any(r.partial for r in self.results):
            notes.append("* cascade: accuracy after this attack and the ones before it")
        if self.warnings:
            notes.append(f"{len(self.warnings)} warning(s): see report.warnings")
        if notes:
            table.caption = "; ".join(notes)
        return table
