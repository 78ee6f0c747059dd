"""What every reproduction target shares: the :class:`Target` record, a result row, the main
job's model settings and small runners. It sits below :mod:`gibbon.reproduce` (which collects the
targets) and :mod:`gibbon.cli` (whose main job trains the same model), so neither is imported here.
The atomic JSON writer the results go through is :func:`gibbon.zoo.io.write_json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# Nothing from gibbon at module level: gibbon.cli imports the main job's settings from here at start-up.

# The main job (`gibbon evaluate` without --model): this model, trained once and cached, under these
# attacks and budgets; madry2018-natural reproduces on the same cached model.
MAIN_ARCH, MAIN_DATASET, MAIN_EPOCHS, MAIN_N = "madry-cnn", "mnist", 2, 1000
MAIN_ATTACKS = ["fgsm", "bim:early_stop=true", "pgd:steps=40,step_size=0.01,random_start=true,early_stop=true"]
MAIN_EPS = [0.1, 0.2, 0.3]


@dataclass(frozen=True)
class Target:
    id: str
    paper: str
    claim: str
    run: Callable[..., list]


def _accuracy_under(model, data, attack, eps, *, batch_size=500, device="cpu", seed=0) -> float:
    from gibbon.attacks.run import run_attack

    result = run_attack(model, data, attack, eps=eps, batch_size=batch_size, seed=seed, device=device, progress=False)
    return float((result.pred_adv == result.y).float().mean())


def _row(quantity, paper, ours, target, ok) -> dict:
    return {"quantity": quantity, "paper": paper, "ours": float(ours), "target": target, "ok": bool(ok)}


def _linear_model(arch: str, classes, *, seed: int, device: str, epochs: int = 5):
    """Train a (softmax or binary logistic) regression on MNIST, cached by the zoo."""
    from gibbon import zoo

    path = zoo.trained(arch, "mnist", epochs=epochs, seed=seed, classes=classes, progress=False)
    return zoo.load(path, device=device)
