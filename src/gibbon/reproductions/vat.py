"""Reproduction of virtual adversarial training (Miyato, Maeda, Koyama & Ishii 2018,
arXiv:1704.03976) on MNIST with 100 labels.

* ``miyato2018-vat-semisupervised``: section 4.2: semi-supervised VAT with 100 labelled
  MNIST images (10 per class) and the training set without labels reaches 1.36% test
  error. Compared here with the labels-only baseline trained the same way (``alpha=0``).

The network is the paper's MNIST MLP, 784-1200-600-300-150-10 with batch normalisation after
every affine layer, the output included (:func:`vat_mlp`). It is not a zoo architecture, so the
two models are trained here and cached under :func:`gibbon.zoo.cache.cache_root` as
safetensors with a card that records the ``factory``; they are loaded back with
:func:`gibbon.zoo.load_user_model` and this module's own factory, never the one on disk.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass

import torch
from torch import nn

#: The paper's MNIST setting (L2 eps 0.3 on [0, 1] images, xi 1e-6, one power iteration, Adam).
LABELS, EPS, XI = 100, 0.3, 1e-6
WIDTHS = (1200, 600, 300, 150)
FACTORY = "gibbon.reproductions.vat:vat_mlp"


@dataclass(frozen=True)
class Recipe:
    """How the semi-supervised MLP is trained. ``fit`` walks the 50,000 training images with their
    labels hidden, ``unlabelled_batch`` at a time, for ``epochs`` passes; every step also takes
    ``labelled_batch`` of the 100 labelled images. ``decay`` picks the lr schedule: ``"linear"``
    (``lr`` until ``1 - decay_fraction`` of the epochs, then linearly to 0) or ``"step"`` (``lr``
    times ``decay_factor`` after every ``decay_every_steps`` updates). ``recalibrate``: after
    training, recompute the BatchNorm statistics over the unlabelled set
    (:func:`gibbon.zoo.recalibrate_batch_norm`), as the authors' code does."""

    name: str
    labelled_batch: int
    unlabelled_batch: int
    epochs: int
    lr: float
    decay: str
    decay_fraction: float = 0.0
    decay_factor: float = 1.0
    decay_every_steps: int = 0
    recalibrate: bool = False
    curve_every: int = 0  # epochs between two test-error readings (0: none)

    def steps_per_epoch(self, n_train: int) -> int:
        return math.ceil(n_train / self.unlabelled_batch)

    def steps(self, n_train: int) -> int:
        return self.epochs * self.steps_per_epoch(n_train)

    def schedule(self, n_train: int):
        if self.decay == "linear":
            return _LinearDecay(self.lr, self.epochs, self.decay_fraction)
        return _StepDecay(self.lr, self.decay_every_steps / self.steps_per_epoch(n_train), self.decay_factor)


#: Our CPU budget: 20 passes (3,920 steps) with 64 labelled + 256 unlabelled images a step,
#: lr 2e-3 then linearly down to 0 over the last 80%; BatchNorm statistics as training left them.
BUDGET = Recipe("budget", labelled_batch=64, unlabelled_batch=256, epochs=20, lr=2e-3, decay="linear",
                decay_fraction=0.8)
#: The authors' code (takerum/vat, ``train_mnist_semisup.py`` defaults): all 100 labelled images
#: and 250 unlabelled ones a step, 100 "epochs" of 500 updates = 50,000 updates, Adam lr 2e-3
#: times 0.9 after every 500 updates, then the BatchNorm statistics recomputed over the
#: unlabelled images. Here 250 passes of 200 steps over our 50,000 training images.
AUTHORS = Recipe("authors", labelled_batch=100, unlabelled_batch=250, epochs=250, lr=2e-3, decay="step",
                 decay_factor=0.9, decay_every_steps=500, recalibrate=True, curve_every=10)


def vat_mlp() -> nn.Module:
    """Miyato et al.'s MNIST network: fc 1200-600-300-150-10 with BatchNorm after *every* affine
    layer, the 10 logits included, and ReLU between (arXiv:1704.03976, section 4; the authors'
    code normalises the output layer too).

    The output BatchNorm matters here: it standardises each class's logit over the batch, so
    no class can vanish from a batch's predictions. Without it, VAT with 100 labels drifted
    into predicting some digits almost never (one run, 20 epochs: 24.5% test error at the end,
    after 10.8% at epoch 5); with it the error fell steadily (9.6% after 8 epochs).
    Initial weights come from the global RNG: seed it first.

    Example:
        >>> vat_mlp()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = 28 * 28
    for out in WIDTHS:
        layers += [nn.Linear(width, out), nn.BatchNorm1d(out), nn.ReLU()]
        width = out
    return nn.Sequential(*layers, nn.Linear(width, 10), nn.BatchNorm1d(10))


class _LinearDecay:
    """``lr`` until ``1 - fraction`` of the epochs, then linearly down to 0 at the end."""

    def __init__(self, lr: float, epochs: int, fraction: float):
        self.lr, self.epochs, self.fraction = lr, epochs, fraction
        self.__qualname__ = f"linear_decay(lr={lr}, epochs={epochs}, fraction={fraction})"

    def __call__(self, t: float) -> float:
        return self.lr * min(1.0, (self.epochs - t) / (self.fraction * self.epochs))


class _StepDecay:
    """``lr * factor ** floor(t / every)``, ``t`` the fractional epoch (the authors' per-500-update decay)."""

    def __init__(self, lr: float, every: float, factor: float):
        self.lr, self.every, self.factor = lr, every, factor
        self.__qualname__ = f"step_decay(lr={lr}, every={every}, factor={factor})"

    def __call__(self, t: float) -> float:
        return self.lr * self.factor ** math.floor(t / self.every)


def _config(alpha: float, recipe: Recipe, seed: int) -> tuple[dict, object]:
    from gibbon.defenses.vat import VATTraining

    defense = VATTraining(eps=EPS, xi=XI, labels=LABELS, alpha=alpha, labelled_batch_size=recipe.labelled_batch)
    config = {"net": "miyato-mlp-" + "-".join(map(str, WIDTHS)), "dataset": "mnist", "defense": defense.spec(),
              "epochs": recipe.epochs, "batch_size": recipe.unlabelled_batch, "lr": recipe.lr, "seed": int(seed)}
    if recipe == BUDGET:
        config["decay"] = recipe.decay_fraction  # the key models trained before the recipes had
    else:
        # curve_every only says when the test error is read; it does not change the weights
        config["recipe"] = {k: v for k, v in dataclasses.asdict(recipe).items() if k != "curve_every"}
    return config, defense


def _test_errors(model, train, test, recipe: Recipe) -> dict:
    """Test error as the model stands, and (``recalibrate``) after its BatchNorm statistics are
    recomputed over the training images, on a copy."""
    from gibbon import zoo

    out = {"test_error": 1 - zoo.accuracy(model, test)}
    if recipe.recalibrate:
        twin = copy.deepcopy(model)
        zoo.recalibrate_batch_norm(twin, train.x, batch_size=recipe.unlabelled_batch)
        out["test_error_recalibrated"] = 1 - zoo.accuracy(twin, test)
    return out


def _trained(alpha: float, *, seed: int, device: str, recipe: Recipe = BUDGET, log=None):
    """The MLP trained with ``vat:labels=100,alpha=ALPHA`` and ``recipe`` (cached); returns
    ``(model, card)``. With ``recipe.curve_every`` the test error is read every that many epochs
    (kept in ``curve.json`` beside the checkpoints, so a resumed run keeps its earlier readings)
    and ``log`` (if given) gets a line each time."""
    from gibbon import data
    from gibbon import zoo
    from gibbon.evaluation.report import write_json_atomic
    from gibbon.zoo.cache import cache_root
    from gibbon.zoo.io import read_card

    config, defense = _config(alpha, recipe, seed)
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    entry = cache_root() / f"miyato-mlp-vat-mnist-{key}"
    weights = entry / "model.safetensors"
    if not (weights.exists() and weights.with_suffix(".json").exists()):
        train, test = data.load("mnist", "train"), data.load("mnist", "test")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = vat_mlp()
        curve_path = entry / "checkpoints" / "curve.json"
        curve = json.loads(curve_path.read_text()) if curve_path.exists() else []

        def read_curve(epoch: int, _entry: dict) -> None:  # epoch: 1-based, as fit counts them
            if not recipe.curve_every or epoch % recipe.curve_every or any(c["epoch"] == epoch for c in curve):
                return
            point = {"epoch": epoch, "steps": epoch * recipe.steps_per_epoch(len(train)),
                     **_test_errors(model, train, test, recipe)}
            curve.append(point)
            write_json_atomic(curve_path, curve)
            if log:
                log(json.dumps(point))

        start = time.perf_counter()
        result = defense.fit(model.to(device), train, epochs=recipe.epochs, batch_size=recipe.unlabelled_batch,
                             lr=recipe.lr, schedule=recipe.schedule(len(train)), seed=int(seed), progress=False,
                             checkpoint_dir=entry / "checkpoints", device=device, callback=read_curve)
        train_seconds = sum(h["seconds"] for h in result.history)
        before = 1 - zoo.accuracy(model, test)
        if recipe.recalibrate:
            zoo.recalibrate_batch_norm(model, train.x, batch_size=recipe.unlabelled_batch)
        card = {"architecture": None, "factory": FACTORY, "dataset": "mnist", "input_shape": [1, 28, 28],
                "num_classes": 10, "seed": int(seed), "epochs": recipe.epochs, "training": config,
                "recipe": recipe.name, "defense": defense.card(), "history": result.history,
                "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - start,
                "steps": recipe.steps(len(train)), "test_error_before_recalibration": before,
                "batch_norm_recalibrated": recipe.recalibrate, "curve": curve}
        zoo.save(model, weights, card)
        shutil.rmtree(entry / "checkpoints", ignore_errors=True)
    # the factory comes from this module, never from the card on disk: no code named in a file is run
    return zoo.load_user_model(FACTORY, weights=weights, device=device), read_card(weights)


def miyato2018_vat_semisupervised(seed=0, device="cpu") -> list:
    """Miyato, Maeda, Koyama & Ishii 2018, "Virtual Adversarial Training: A Regularization
    Method for Supervised and Semi-Supervised Learning" (arXiv:1704.03976), section 4.2: MNIST with
    100 labels, VAT 1.36% test error.

    Here: 100 class-balanced labelled images of gibbon's 50,000-image train split (split seed
    0), all 50,000 walked with labels hidden for the LDS (``R_vadv`` averages it over labelled and
    unlabelled inputs); :func:`vat_mlp`; eps 0.3, xi 1e-6, one power iteration; Adam, lr 2e-3
    for 4 epochs then linearly to 0; 20 passes = 3,920 steps, against the 50,000 updates of the
    authors' code (100 epochs of 500), to fit about 10 CPU minutes. The baseline is the same run
    with ``alpha=0`` (same initial weights, same labelled batches). Errors on the 10,000 test
    images.

    Measured (seed 0, one CPU thread): baseline 22.3%, VAT 8.5% (ratio 0.38), after 286 s of
    VAT and 71 s of baseline training (6.1 min in all). The gap to 1.36% is the budget: VAT's
    error was still falling (10.8% at epoch 11, 8.5% at 20), and 8 epochs gave 9.6%.
    """
    from gibbon import data
    from gibbon import zoo
    from gibbon.reproductions._common import _row

    test = data.load("mnist", "test")
    base, base_card = _trained(0.0, seed=seed, device=device)
    vat, vat_card = _trained(1.0, seed=seed, device=device)
    base_err, vat_err = 1 - zoo.accuracy(base, test), 1 - zoo.accuracy(vat, test)
    return [
        _row("labels-only baseline test error (100 labels, same loop)", "not stated", base_err, "report", True),
        _row("VAT test error (100 labels; ~8% of the paper's updates)", "1.36%", vat_err, "<= 12%",
             vat_err <= 0.12),
        _row("VAT error / baseline error", "-", vat_err / base_err, "< 50%", vat_err < 0.5 * base_err),
        _row("VAT training steps", "50,000 (authors' code)", vat_card["steps"], "record", True),
        _row("VAT training time (s)", "-", vat_card["train_seconds"], "record", True),
        _row("baseline training time (s)", "-", base_card["train_seconds"], "record", True),
    ]


def miyato2018_vat_semisupervised_authors(seed=0, device="cpu") -> list:
    """Miyato, Maeda, Koyama & Ishii 2018 (arXiv:1704.03976), section 4.2, in the training setting
    of the authors' code (:data:`AUTHORS`): all 100 labelled images and 250 unlabelled ones a
    step, 50,000 Adam updates (lr 2e-3 times 0.9 every 500), then the BatchNorm statistics
    recomputed over the unlabelled training images. Same network, eps, xi and labelled split as
    :func:`miyato2018_vat_semisupervised`; the baseline is the same loop with ``alpha=0``.
    Errors on the 10,000 test images; the VAT run's test error every 2,000 updates is kept in
    its model card (``curve``).

    Measured (seed 0, one CPU thread, stopped after 30,000 updates): the error falls to 18.4%
    after 6,000 updates, then rises to 61% by 16,000 and stays there, with or without the
    BatchNorm recalibration; so this target does not reproduce the paper yet.
    """
    from gibbon import data
    from gibbon import zoo
    from gibbon.reproductions._common import _row

    test = data.load("mnist", "test")
    base, base_card = _trained(0.0, seed=seed, device=device, recipe=dataclasses.replace(AUTHORS, curve_every=0))
    vat, vat_card = _trained(1.0, seed=seed, device=device, recipe=AUTHORS)
    base_err, vat_err = 1 - zoo.accuracy(base, test), 1 - zoo.accuracy(vat, test)
    return [
        _row("labels-only baseline test error (100 labels, same loop, BN recalibrated)", "not stated", base_err,
             "report", True),
        # no pass mark: measured here (seed 0) the run collapses, 18.4% error after 6,000 updates and
        # 61% from 16,000 on (docs/reproduction.md); a mark waits until that is understood
        _row("VAT test error (100 labels, the authors' 50,000 updates, BN recalibrated)", "1.36%", vat_err,
             "record", True),
        _row("VAT test error before the BatchNorm recalibration", "-", vat_card["test_error_before_recalibration"],
             "record", True),
        _row("VAT error / baseline error", "-", vat_err / base_err, "< 50%", vat_err < 0.5 * base_err),
        _row("VAT training time (s)", "-", vat_card["train_seconds"], "record", True),
    ]


def targets() -> list:
    """The :class:`gibbon.reproductions._common.Target` s of this module."""
    from gibbon.reproductions._common import Target

    return [Target("miyato2018-vat-semisupervised", "Miyato et al. 2018",
                   "VAT, MNIST 100 labels: 1.36% test error (vs the labels-only baseline)",
                   miyato2018_vat_semisupervised),
            Target("miyato2018-vat-semisupervised-authors", "Miyato et al. 2018",
                   "VAT, MNIST 100 labels, the authors' 50,000 updates and BatchNorm recalibration: 1.36% test error",
                   miyato2018_vat_semisupervised_authors)]
