"""Poison, train, measure: the runs behind ``gibbon poison`` and the poisoning reproductions.

Every run is one JSON file in ``out_dir`` named after its settings; a rerun (or a curve resumed
after a kill) reads the finished ones back instead of training again, and each training
checkpoints per epoch (:func:`gibbon.zoo.fit`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.poisoning.backdoor import attack_success_rate, badnets_poison, check_rate
from gibbon.poisoning.label_flip import class_accuracy, flip_labels
from gibbon.poisoning.triggers import Trigger

DETECTORS = ("spectral", "activation-clustering", "fine-pruning")


def recipe(arch: str, *, epochs: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0) -> dict:
    if int(epochs) != epochs or epochs < 1:
        raise GibbonInputError(f"epochs must be a whole number >= 1, got {epochs!r}")
    return {"arch": arch, "epochs": int(epochs), "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed)}


def train_on(train, how: dict, *, device: str = "cpu", checkpoint_dir=None, progress: bool = False):
    """A fresh zoo model (initialised from ``how["seed"]``) trained on ``train`` with Adam."""
    from gibbon import zoo

    with torch.random.fork_rng():
        torch.manual_seed(how["seed"])
        model = zoo.build(how["arch"], train).to(device)
    zoo.fit(model, train, epochs=how["epochs"], batch_size=how["batch_size"], lr=how["lr"], seed=how["seed"],
            checkpoint_dir=checkpoint_dir, progress=progress, device=device)
    return model.eval()


def run_key(**settings) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _cached(path: Path, settings: dict):
    if path.exists():
        stored = json.loads(path.read_text())
        if stored.get("settings") == json.loads(json.dumps(settings, default=str)):
            return stored
    return None


def _store(path: Path, settings: dict, result: dict) -> dict:
    from gibbon.evaluation.report import write_json_atomic

    record = {"settings": json.loads(json.dumps(settings, default=str)), **result}
    write_json_atomic(path, record)
    return record


def backdoor_run(train, test, how: dict, *, trigger: Trigger, target: int, rate: float, poison_seed: int = 0,
                 out_dir, device: str = "cpu", progress: bool = False, keep_model: bool = False) -> dict:
    """Train on BadNets-poisoned data (``rate = 0``: the clean baseline); clean accuracy and ASR.

    With ``keep_model`` the trained model is returned under ``"model"`` (and never read from cache).
    """
    out_dir = Path(out_dir)
    if rate != 0:
        check_rate(rate)
    settings = {"attack": "badnets", "dataset": train.name, "n_train": len(train.y), **how, "rate": float(rate),
                "target": int(target), "trigger": trigger.to_dict(), "poison_seed": int(poison_seed)}
    path = out_dir / f"badnets-{run_key(**settings)}.json"
    if not keep_model and (done := _cached(path, settings)) is not None:
        return done
    poisoned = None if rate == 0 else badnets_poison(train, trigger, target, rate, seed=poison_seed)
    model = train_on(train if poisoned is None else poisoned.dataset, how, device=device, progress=progress,
                     checkpoint_dir=out_dir / "checkpoints" / path.stem)
    from gibbon.zoo.training import accuracy

    result = {"poisons": 0 if poisoned is None else len(poisoned.poison_indices),
              "clean_accuracy": accuracy(model, test),
              "attack_success_rate": attack_success_rate(model, test, trigger, target)}
    record = _store(path, settings, result)
    if keep_model:
        record = {**record, "model": model, "poisoned": poisoned}
    return record


def flip_run(train, test, how: dict, *, rate: float, mode: str, source=None, target=None, flip_seed: int = 0,
             out_dir, device: str = "cpu", progress: bool = False) -> dict:
    """Train on label-flipped data (``rate = 0``: clean); test accuracy, and the source class's for targeted."""
    from gibbon.zoo.training import accuracy

    out_dir = Path(out_dir)
    settings = {"attack": "label-flip", "dataset": train.name, "n_train": len(train.y), **how, "rate": float(rate),
                "mode": mode, "source": source, "target": target, "flip_seed": int(flip_seed)}
    path = out_dir / f"flip-{run_key(**settings)}.json"
    if (done := _cached(path, settings)) is not None:
        return done
    data = train if rate == 0 else flip_labels(train, rate, mode=mode, source=source, target=target,
                                               seed=flip_seed).dataset
    model = train_on(data, how, device=device, progress=progress, checkpoint_dir=out_dir / "checkpoints" / path.stem)
    result = {"accuracy": accuracy(model, test)}
    if source is not None:
        result["source_accuracy"] = class_accuracy(model, test, source)
    return _store(path, settings, result)


def detect(methods, model, poisoned, *, clean, test, trigger: Trigger, target: int, seed: int = 0,
           fine_tune_epochs: int = 2) -> dict:
    """Run the named detectors on a poisoned training set and the model trained on it.

    ``spectral`` and ``activation-clustering`` report recall of the poisons and the share of
    clean rows removed; ``fine-pruning`` reports the ASR and clean test accuracy after pruning
    and after fine-tuning on ``clean`` (the defender's own clean data).
    """
    from gibbon.poisoning.activation_clustering import activation_clustering
    from gibbon.poisoning.features import penultimate_features
    from gibbon.poisoning.fine_pruning import fine_prune
    from gibbon.poisoning.spectral import spectral_signatures
    from gibbon.zoo.training import accuracy

    unknown = [m for m in methods if m not in DETECTORS]
    if unknown:
        raise GibbonInputError(f"unknown detector(s) {', '.join(unknown)}; choose from {', '.join(DETECTORS)}")
    out = {}
    features = None
    for method in methods:
        if method in ("spectral", "activation-clustering"):
            if features is None:
                features = penultimate_features(model, poisoned.dataset.x)
            found = (spectral_signatures(features, poisoned.dataset.y) if method == "spectral"
                     else activation_clustering(features, poisoned.dataset.y, whiten="robust", seed=seed))
            out[method] = found.to_dict(poisoned.poison_mask)
        else:
            tuned = fine_prune(model, clean, fine_tune_epochs=fine_tune_epochs, lr=1e-3, seed=seed)
            pruned = tuned.model if tuned.pruned_model is None else tuned.pruned_model
            out[method] = {**tuned.to_dict(),
                           "pruned_only": {"clean_accuracy": accuracy(pruned, test),
                                           "attack_success_rate": attack_success_rate(pruned, test, trigger, target)},
                           "fine_tuned": {"clean_accuracy": accuracy(tuned.model, test),
                                          "attack_success_rate": attack_success_rate(tuned.model, test, trigger,
                                                                                     target)}}
    return out
