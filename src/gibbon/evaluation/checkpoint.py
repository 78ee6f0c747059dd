"""Resumable evaluations: finished (attack, eps) units saved atomically, keyed by a fingerprint.

File format (JSON, written with temp file + ``os.replace`` after every finished unit)::

    {"format": "gibbon-evaluation-checkpoint", "version": 1,
     "fingerprint": {...everything that changes the numbers...},
     "clean": "0110...",                      # per-sample clean correctness
     "units": {"<attack index>/<eps index>": {
         "robust": "0100...",                 # per-sample robust after this unit
         "seconds": 1.2, "forwards": 500, "gradients": 500,
         "extra": {...}, "warnings": [...]}}}

The fingerprint holds the attacks' names and parameters, the eps list, norm, n, seed, cascade,
batch size, bounds, target, a SHA-256 of the labels, the sum of the inputs and of the model's
parameters. A checkpoint with another fingerprint is never mixed in: the evaluation starts over
(with a warning) and overwrites it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from gibbon.evaluation.report import bits_to_str, eps_to_json, jsonable, str_to_bits, write_json_atomic

FORMAT = "gibbon-evaluation-checkpoint"
VERSION = 1


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def fingerprint(*, attacks, eps, norm, x, y, seed, cascade, batch_size, bounds, target, model) -> dict:
    """Everything that changes the numbers of an evaluation, as a JSON-ready dict."""
    with torch.no_grad():
        params = model.parameters() if hasattr(model, "parameters") else ()
        param_sum = sum(float(p.detach().double().sum()) for p in params)
    return jsonable({
        "attacks": attacks,
        "eps": [eps_to_json(e) for e in eps],
        "norm": norm,
        "n": int(x.shape[0]),
        "x_shape": list(x.shape),
        "x_sum": repr(float(x.detach().double().sum())),
        "y_sha256": tensor_sha256(y),
        "target_sha256": None if target is None else tensor_sha256(target),
        "seed": int(seed),
        "cascade": bool(cascade),
        "batch_size": int(batch_size),
        "bounds": [float(b) for b in bounds],
        "model": {"class": type(model).__name__, "param_sum": repr(param_sum)},
    })


class Checkpoint:
    """Units already done (loaded from ``path`` if its fingerprint matches) and saving new ones.

    ``warning`` holds a message when an existing file had to be discarded.
    """

    def __init__(self, path, fp: dict, clean_correct: torch.Tensor):
        self.path = Path(path) if path is not None else None
        self.fingerprint = fp
        self.clean = bits_to_str(clean_correct)
        self.units: dict[str, dict] = {}
        self.warning: str | None = None
        if self.path is not None and self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                saved = json.load(f)
        except (OSError, ValueError) as err:
            self.warning = f"checkpoint {self.path} could not be read ({err}); starting over"
            return
        if saved.get("format") != FORMAT or saved.get("version") != VERSION:
            self.warning = f"checkpoint {self.path} is not a gibbon evaluation checkpoint (version {VERSION}); starting over"
            return
        old = saved.get("fingerprint", {})
        if old != self.fingerprint or saved.get("clean") != self.clean:
            differs = sorted(k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k))
            self.warning = (f"checkpoint {self.path} was written for a different evaluation "
                            f"(differs in: {', '.join(differs) or 'clean predictions'}); starting over")
            return
        self.units = saved.get("units", {})

    @staticmethod
    def key(attack_index: int, eps_index: int) -> str:
        return f"{attack_index}/{eps_index}"

    def get(self, attack_index: int, eps_index: int) -> dict | None:
        """The saved unit (with ``robust`` as a bool tensor), or None when not done yet."""
        unit = self.units.get(self.key(attack_index, eps_index))
        if unit is None:
            return None
        return {**unit, "robust": str_to_bits(unit["robust"])}

    def put(self, attack_index: int, eps_index: int, unit: dict) -> None:
        """Record a finished unit (``robust`` a bool tensor) and save the file if there is one."""
        self.units[self.key(attack_index, eps_index)] = jsonable({**unit, "robust": bits_to_str(unit["robust"])})

    def save(self) -> None:
        if self.path is None:
            return
        write_json_atomic(self.path, {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                                      "clean": self.clean, "units": self.units})
