"""An evaluation cut into shards that run anywhere, in any order, with the single-process numbers.

A *shard* is a few consecutive mini-batches of one (attack, eps) unit: attack ``a`` on the
samples ``active[first_batch * batch_size : ...]`` at eps ``j`` (a minimal attack outside a
cascade runs once, ``eps_index=None``, at the largest eps, and is scored at every eps, as in
:func:`gibbon.evaluation.evaluate`). Its attack generators are seeded with the *global* batch
index (``first_batch + b``, :func:`gibbon.evaluation.runner.attack_seed`), so each batch sees
the same samples and the same random numbers as in one process: merged, the shards give the
same per-sample results. A cascade (each attack on the survivors of the ones before) cannot be
cut within an eps without changing its batches, so there one shard is one eps's whole chain;
the seeds do not depend on eps, so the chains are independent.

Finished shards are saved one file each, ``<dir>/<key>.json`` (temp file + ``os.replace``),
stamped with a digest of everything that changes the numbers (the evaluation's fingerprint,
the clean predictions, the shard's samples). A rerun loads the files whose stamp matches and
computes only the rest: a killed grid resumes where it stopped and computes no shard twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from gibbon.evaluation.checkpoint import Checkpoint
from gibbon.evaluation.report import bits_to_str, jsonable, str_to_bits, write_json_atomic
from gibbon.evaluation.runner import run_cascade, unit_result

FORMAT = "gibbon-evaluation-shard"
VERSION = 1


@dataclass(frozen=True)
class Shard:
    """One piece of work. ``kind`` is ``"batches"`` (attack ``attack_index`` on ``indices`` at eps
    ``eps_index``, None for a minimal attack's single run) or ``"cascade"`` (every attack, in
    order, at eps ``eps_index``, on all clean-correct samples)."""

    key: str
    kind: str
    attack_index: int | None
    eps_index: int | None
    first_batch: int
    indices: tuple[int, ...]


def plan_shards(chosen, n_eps: int, clean: torch.Tensor, batch_size: int, *, cascade: bool,
                batches_per_shard: int = 1) -> list[Shard]:
    """Every shard of an evaluation, in the order one process would run them."""
    active = tuple(int(i) for i in torch.arange(len(clean))[clean])
    if cascade:
        return [Shard(f"cascade-e{j}", "cascade", None, j, 0, active) for j in range(n_eps)]
    per_shard = batch_size * batches_per_shard
    shards = []
    for a, attack in enumerate(chosen):
        for j in ([None] if attack.minimal else range(n_eps)):
            label = "all" if j is None else str(j)
            for start in range(0, len(active), per_shard):
                shards.append(Shard(f"a{a}-e{label}-b{start // batch_size}", "batches", a, j, start // batch_size,
                                    active[start:start + per_shard]))
    return shards


def shard_stamp(fingerprint: dict, clean: torch.Tensor, shard: Shard) -> str:
    """Digest of what a shard's numbers depend on; a saved shard with another stamp is recomputed."""
    text = json.dumps({"fingerprint": fingerprint, "clean": bits_to_str(clean), "key": shard.key,
                       "kind": shard.kind, "indices": list(shard.indices)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def run_shard(runner, chosen, eps_values, clean: torch.Tensor, shard: Shard) -> dict:
    """Compute one shard with ``runner`` (a :class:`~gibbon.evaluation.runner.Runner`); JSON-ready."""
    if shard.kind == "cascade":
        units = run_cascade(runner, chosen, [eps_values[shard.eps_index]], clean, Checkpoint(None, {}, clean))
        return {"units": {str(a): encode_unit(units[(a, 0)]) for a in range(len(chosen))}}
    attack = chosen[shard.attack_index]
    eps = max(eps_values) if shard.eps_index is None else eps_values[shard.eps_index]
    run = runner.run(shard.attack_index, attack, eps, torch.tensor(shard.indices, dtype=torch.long),
                     first_batch=shard.first_batch)
    return {"run": encode_run(run)}


def encode_run(run: dict) -> dict:
    return jsonable({**run, "success": bits_to_str(run["success"]),
                     "distance": [float(d) for d in run["distance"].tolist()]})


def decode_run(saved: dict) -> dict:
    return {**saved, "success": str_to_bits(saved["success"]),
            "distance": torch.tensor(saved["distance"], dtype=torch.float64)}


def encode_unit(unit: dict) -> dict:
    return jsonable({**unit, "robust": bits_to_str(unit["robust"])})


def decode_unit(saved: dict) -> dict:
    return {**saved, "robust": str_to_bits(saved["robust"])}


def merge_runs(runs: list[dict]) -> dict:
    """One (attack, eps) run from its shards' runs, in sample order: what one process returns,
    with time and passes summed and each warning kept once."""
    warnings: list[str] = []
    for run in runs:
        warnings.extend(w for w in run["warnings"] if w not in warnings)
    queries = [run.get("queries") for run in runs]
    return {"success": torch.cat([r["success"] for r in runs]), "distance": torch.cat([r["distance"] for r in runs]),
            "seconds": sum(float(r["seconds"]) for r in runs), "forwards": sum(int(r["forwards"]) for r in runs),
            "gradients": sum(int(r["gradients"]) for r in runs),
            "queries": None if any(q is None for q in queries) else sum(queries), "warnings": warnings}


def assemble_units(shards: list[Shard], results: dict[str, dict], chosen, eps_values, clean: torch.Tensor,
                   width: float) -> dict:
    """The ``{(attack, eps): unit}`` dict of :func:`gibbon.evaluation.evaluate` from finished shards."""
    units = {}
    for shard in shards:
        if shard.kind == "cascade":
            for a, saved in results[shard.key]["units"].items():
                units[(int(a), shard.eps_index)] = decode_unit(saved)
    groups: dict[tuple[int, int | None], list[Shard]] = {}
    for shard in shards:
        if shard.kind == "batches":
            groups.setdefault((shard.attack_index, shard.eps_index), []).append(shard)
    for (a, j), members in groups.items():
        members.sort(key=lambda s: s.first_batch)
        run = merge_runs([decode_run(results[s.key]["run"]) for s in members])
        active = torch.tensor([i for s in members for i in s.indices], dtype=torch.long)
        minimal = chosen[a].minimal
        for jj in (range(len(eps_values)) if j is None else [j]):
            units[(a, jj)] = unit_result(clean, active, run, eps_values[jj], width, minimal=minimal,
                                         shared=j is None)
    for a, attack in enumerate(chosen):  # an attack with no clean-correct sample to attack: nothing broken
        for j, e in enumerate(eps_values):
            if (a, j) not in units:
                empty = {"success": torch.zeros(0, dtype=torch.bool), "distance": torch.zeros(0, dtype=torch.float64),
                         "seconds": 0.0, "forwards": 0, "gradients": 0, "queries": None, "warnings": []}
                units[(a, j)] = unit_result(clean, torch.zeros(0, dtype=torch.long), empty, e, width,
                                            minimal=attack.minimal, shared=attack.minimal)
    return units


class ShardStore:
    """Finished shards of one evaluation as one JSON file each under ``directory`` (None: memory only)."""

    def __init__(self, directory, fingerprint: dict, clean: torch.Tensor):
        self.directory = Path(directory) if directory is not None else None
        self.fingerprint, self.clean = fingerprint, clean

    def path(self, shard: Shard) -> Path:
        return self.directory / f"{shard.key}.json"

    def load(self, shard: Shard) -> dict | None:
        """The saved result of ``shard`` if its file is there, readable and stamped for this evaluation."""
        if self.directory is None or not self.path(shard).exists():
            return None
        try:
            saved = json.loads(self.path(shard).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # torn or foreign: recomputed and overwritten
        if (saved.get("format"), saved.get("version")) != (FORMAT, VERSION):
            return None
        if saved.get("stamp") != shard_stamp(self.fingerprint, self.clean, shard):
            return None
        return saved.get("result")

    def save(self, shard: Shard, result: dict) -> None:
        if self.directory is not None:
            write_json_atomic(self.path(shard), {"format": FORMAT, "version": VERSION, "key": shard.key,
                                                 "stamp": shard_stamp(self.fingerprint, self.clean, shard),
                                                 "result": result})


def shard_directory(checkpoint) -> Path | None:
    """Where a sharded run keeps its shards: beside ``checkpoint`` (``NAME.json`` -> ``NAME.shards/``)."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    return path.with_name(path.stem + ".shards") if path.suffix else path.with_name(path.name + ".shards")

