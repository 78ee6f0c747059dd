"""Run one attack over a whole dataset in mini-batches and keep what a user wants to save."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gibbon.core.goals import is_adversarial
from gibbon.core.norms import get_norm


@dataclass
class AttackResult:
    """Adversarial examples with per-sample outcome.

    Attributes:
        x, x_adv: clean and adversarial inputs ``(N, ...)``. y: true labels ``(N,)``.
        target: target labels ``(N,)`` or None. pred_adv: predictions on ``x_adv``.
        success: ``bool[N]``, the attack's goal reached (target hit, or label changed).
        distance: ``[N]`` distance ``||x_adv - x||`` in the attack's norm.
        settings: attack name, parameters, eps, norm, seed (saved beside the arrays).
    """

    x: torch.Tensor
    x_adv: torch.Tensor
    y: torch.Tensor
    pred_adv: torch.Tensor
    success: torch.Tensor
    distance: torch.Tensor
    target: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)


def run_attack(model, data, attack, *, eps, norm="linf", target=None, batch_size=250, seed=0, device="cpu",
               progress=True) -> AttackResult:
    """Attack every sample of ``data`` (a :class:`gibbon.data.Dataset`) in mini-batches.

    Batch ``i`` draws its randomness from ``torch.Generator().manual_seed(seed + i)``.
    ``target`` may be None, a class id, ``"least-likely"`` or ``"random"``.
    """
    from rich.progress import Progress

    from gibbon.attacks._common import resolve_target

    norm_obj = get_norm(norm)
    was_training = model.training
    model.eval()
    pieces = []
    try:
        with Progress(transient=True, disable=not progress) as bar:
            task = bar.add_task(f"{attack.name}", total=len(data))
            for i, start in enumerate(range(0, len(data), batch_size)):
                x = data.x[start : start + batch_size].to(device)
                y = data.y[start : start + batch_size].to(device)
                gen = torch.Generator().manual_seed(seed + i)
                if target is not None:
                    with torch.no_grad():
                        t = resolve_target(target, model(x), y, seed + i).to(device)
                else:
                    t = None
                x_adv = attack(model, x, y, eps=eps if eps is not None else 0.0, norm=norm_obj.name, target=t,
                               bounds=data.bounds, generator=gen)
                with torch.no_grad():
                    logits = model(x_adv)
                pieces.append((x, x_adv, y, t, logits.argmax(1), is_adversarial(logits, y, t),
                               norm_obj.distance(x_adv - x)))
                bar.advance(task, len(x))
    finally:
        model.train(was_training)
    cat = lambda k: torch.cat([p[k].cpu() for p in pieces]) if pieces and pieces[0][k] is not None else None  # noqa: E731
    settings = {"attack": attack.name, "params": attack.params(), "eps": eps, "norm": norm_obj.name,
                "target": target if target is None or isinstance(target, (str, int)) else "tensor",
                "seed": seed, "dataset": data.name, "split": data.split}
    return AttackResult(x=cat(0), x_adv=cat(1), y=cat(2), target=cat(3), pred_adv=cat(4), success=cat(5),
                        distance=cat(6), settings=settings)


def save_npz(path: str | os.PathLike, result: AttackResult) -> None:
    """Write ``x, x_adv, y, pred_adv, success, distance`` (+ ``target``, ``settings`` JSON) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: getattr(result, k).numpy() for k in ("x", "x_adv", "y", "pred_adv", "success", "distance")}
    if result.target is not None:
        arrays["target"] = result.target.numpy()
    # settings as a JSON string (a unicode array): readable with np.load(..., allow_pickle=False)
    arrays["settings"] = np.array(json.dumps(result.settings, default=str))
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
