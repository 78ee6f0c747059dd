"""A cache of trained zoo models: train once, reuse everywhere.

Layout: ``<cache_dir>/<arch>-<dataset>-<key>/model.safetensors`` + ``model.json`` (the card),
with ``checkpoints/`` there while training runs (removed when it finishes), so a killed
training resumes. ``key`` is the first 16 hex digits of the sha256 of the sorted-keys JSON of
the training config (:func:`training_config`). ``cache_dir``: the argument, else the
``GIBBON_CACHE`` environment variable, else ``~/.cache/gibbon/models``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.zoo.architectures import ARCHITECTURES, build
from gibbon.zoo.io import gibbon_version, read_card, save
from gibbon.zoo.training import accuracy, fit


def cache_root(cache_dir=None) -> Path:
    """The models cache folder: ``cache_dir``, else ``$GIBBON_CACHE``, else ``~/.cache/gibbon/models``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("GIBBON_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "gibbon" / "models"


def training_config(arch, dataset_name, *, epochs, seed=0, batch_size=128, lr=1e-3, optimizer="adam",
                    schedule=None, n_train=None, classes=None, defense=None) -> dict:
    """The training config a cache entry is keyed by (includes gibbon's major.minor version).

    ``defense`` (a parsed defense, ``gibbon.defenses.parse_defense("pgd:eps=0.3")``) is stored as
    its canonical ``spec()``, and only when given, so that undefended models keep their cache keys.
    The zoo takes the defense from its caller rather than parsing a spec itself: the defenses sit
    above the zoo (they train with :func:`fit`, and ``ensemble`` loads cached zoo models).
    """
    if arch not in ARCHITECTURES:
        raise GibbonInputError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")
    if schedule is not None and not isinstance(schedule, str):
        raise GibbonInputError("cached models need a named schedule ('constant', 'cyclic', 'step') or None")
    config = {
        "arch": arch,
        "dataset": dataset_name,
        "epochs": int(epochs),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "optimizer": optimizer,
        "schedule": schedule,
        "n_train": None if n_train is None else int(n_train),
        "classes": None if classes is None else list(classes),
        "gibbon": ".".join(gibbon_version().split(".")[:2]),
    }
    if defense is not None:
        config["defense"] = _defense_spec(defense)
    return config


def _defense_spec(defense) -> str:
    if isinstance(defense, str) or not callable(getattr(defense, "spec", None)):
        raise GibbonInputError(f"defense= takes a parsed defense, not {defense!r}: pass "
                               "gibbon.defenses.parse_defense('NAME:key=value,...')")
    return defense.spec()


def cache_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock (released even if the process dies) so two processes don't train the
    same entry at once; a no-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def default_train(config: dict, checkpoint_dir: Path, progress: bool = True, defense=None):
    """Train ``config`` on ``gibbon.data``; returns ``(model, card_fields)``.

    ``defense``: the parsed defense whose ``spec()`` is ``config["defense"]`` (trained with its
    ``fit`` and recorded with its ``trained_card``); None for an undefended config."""
    named = config.get("defense") or None
    if named != (None if defense is None else _defense_spec(defense)):
        raise GibbonInputError("default_train needs the parsed defense that config['defense'] names (and only then)")
    data = importlib.import_module("gibbon.data")  # lazily: the data package is optional here
    name, classes = config["dataset"], config["classes"]
    kw = {} if classes is None else {"classes": classes}
    train = data.load(name, "train", n=config["n_train"], **kw)
    val = data.load(name, "val", **kw)
    test = data.load(name, "test", **kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        model = build(config["arch"], train)
    fit_kwargs = dict(epochs=config["epochs"], batch_size=config["batch_size"], optimizer=config["optimizer"],
                      lr=config["lr"], schedule=config["schedule"], val=val, seed=config["seed"],
                      checkpoint_dir=checkpoint_dir, progress=progress)
    start = time.perf_counter()
    if defense is not None:
        result = defense.fit(model, train, **fit_kwargs)
    else:
        result = fit(model, train, **fit_kwargs)
    seconds = time.perf_counter() - start
    card = {
        "dataset": name,
        "classes": list(train.classes),
        "bounds": list(train.bounds),
        "data_source": train.source,
        "val_accuracy": result.val_accuracy,
        "clean_test_accuracy": accuracy(model, test),
        "history": result.history,
        "train_seconds": seconds,
        "torch_threads": torch.get_num_threads(),
    }
    if defense is not None:
        card.update(defense.trained_card(result))
    return model, card


def trained(
    arch: str,
    dataset_name: str,
    *,
    epochs: int,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: str = "adam",
    schedule: str | None = None,
    n_train: int | None = None,
    classes=None,
    defense=None,
    progress: bool = True,
    cache_dir=None,
    train_fn: Callable | None = None,
) -> Path:
    """Path to the ``.safetensors`` of ``arch`` trained on ``dataset_name`` with this config,
    training it (once) if the cache does not have it yet. Load it with :func:`gibbon.zoo.load`.

    The model is initialised with ``torch.manual_seed(seed)`` (inside ``fork_rng``) and trained
    with :func:`fit` on ``gibbon.data.load(dataset_name, "train", n=n_train)``, validated on
    ``"val"``; the card's ``clean_test_accuracy`` is measured on ``"test"``. ``classes`` selects
    a class subset (e.g. ``[3, 7]`` for ``logistic-regression``). ``defense`` (a parsed
    :mod:`gibbon.defenses` config, e.g. ``parse_defense("fgsm:eps=0.25")``) trains with that
    defense's :meth:`~gibbon.defenses.registry.DefenseConfig.fit` and is recorded in the card.

    ``train_fn(config, checkpoint_dir, progress) -> (model, card_fields)`` replaces that
    training (tests, custom pipelines); ``config`` is :func:`training_config`'s dict.
    """
    config = training_config(arch, dataset_name, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr,
                             optimizer=optimizer, schedule=schedule, n_train=n_train, classes=classes,
                             defense=defense)
    tag = "" if defense is None else "-" + config["defense"].partition(":")[0]
    entry = cache_root(cache_dir) / f"{arch}{tag}-{dataset_name}-{cache_key(config)}"
    weights = entry / "model.safetensors"
    if weights.exists() and weights.with_suffix(".json").exists():
        return weights
    entry.mkdir(parents=True, exist_ok=True)
    with _lock(entry / ".lock"):
        if weights.exists() and weights.with_suffix(".json").exists():  # another process finished it
            return weights
        ckpt = entry / "checkpoints"
        if train_fn is None:
            model, fields = default_train(config, ckpt, progress, defense=defense)
        else:
            model, fields = train_fn(config, ckpt, progress)
        card = {
            "architecture": arch,
            "dataset": dataset_name,
            "seed": config["seed"],
            "epochs": config["epochs"],
            "training": config,
            "cache_key": cache_key(config),
            **(fields or {}),
        }
        save(model, weights, card)
        shutil.rmtree(ckpt, ignore_errors=True)
    return weights


def list_cached(cache_dir=None) -> list[dict]:
    """Cards of the models in the cache (each with ``path``: its ``.safetensors``), sorted by path."""
    root = cache_root(cache_dir)
    cards = []
    for cpath in sorted(root.glob("*/model.json")):
        weights = cpath.with_suffix(".safetensors")
        if not weights.exists():
            continue
        try:
            card = read_card(weights)
        except GibbonInputError:
            continue
        cards.append({**card, "path": str(weights)})
    return cards
