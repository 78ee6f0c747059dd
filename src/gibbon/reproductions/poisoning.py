"""Backdoors, their detection and label flipping on MNIST, CPU-sized.

* ``gu2017-badnets``: Gu, Dolan-Gavitt & Garg 2017 ("BadNets", arXiv:1708.06733): a 4x4
  checkerboard in the bottom-right corner, all-to-one to class 0, LeNet-5 (Adam lr 1e-3, batch
  128, 10 epochs, seed 0) on the 50,000 MNIST training images; attack success rate and clean
  accuracy against the poisoned share, 0.1% to 10%.
* ``tran2018-spectral``: Tran, Li & Madry 2018 (arXiv:1811.00636) spectral signatures on the 1%
  poisoned model, as written and with robust whitening; activation clustering (Chen et al. 2018,
  arXiv:1811.03728); fine-pruning (Liu et al. 2018, arXiv:1805.12185); and the ASR after
  retraining on what spectral signatures keep.
* ``poisoning-label-flip``: random and targeted label flipping, accuracy against the flip rate.

Each training run is cached as JSON under :func:`gibbon.zoo.cache.cache_root` ``/poisoning``.
"""

from __future__ import annotations

import time

ARCH, EPOCHS, LR = "lenet5", 10, 1e-3
TARGET, RATE = 0, 0.01
RATES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
FLIP_RATES = (0.1, 0.2, 0.3, 0.4)
FLIP_SOURCE, FLIP_TARGET, FLIP_EPOCHS = 7, 1, 5


def _setting(seed: int):
    from gibbon import data
    from gibbon.poisoning.experiments import recipe
    from gibbon.poisoning.triggers import Trigger
    from gibbon.zoo.cache import cache_root

    return (data.load("mnist", "train"), data.load("mnist", "val"), data.load("mnist", "test"),
            recipe(ARCH, epochs=EPOCHS, lr=LR, seed=seed), Trigger(size=4), cache_root() / "poisoning")


def gu2017_badnets(seed=0, device="cpu") -> list:
    """Gu et al. 2017 (arXiv:1708.06733), MNIST: the backdoored network keeps the clean network's
    accuracy and obeys the trigger on ~99% of the images (their pattern backdoor, all-to-one).

    Measured (seed 0, one torch thread, 2-core machine, ~30 s per training): clean LeNet-5
    98.76%; at 1% poisons (500 images) 98.75% clean and 99.70% ASR. The curve is in
    ``docs/poisoning.md``; 8 trainings, ~5 minutes in all.
    """
    from gibbon.poisoning.experiments import backdoor_run
    from gibbon.reproductions._common import _row

    train, _, test, how, trigger, folder = _setting(seed)
    started = time.perf_counter()
    clean = backdoor_run(train, test, how, trigger=trigger, target=TARGET, rate=0, out_dir=folder, device=device,
                         progress=True)
    runs = {r: backdoor_run(train, test, how, trigger=trigger, target=TARGET, rate=r, poison_seed=seed,
                            out_dir=folder, device=device, progress=True) for r in RATES}
    at = runs[RATE]
    drop = clean["clean_accuracy"] - at["clean_accuracy"]
    rows = [_row("clean model accuracy (10k test)", "not stated (~99%)", clean["clean_accuracy"], "report", True),
            _row("clean model ASR (trigger on, no backdoor)", "-", clean["attack_success_rate"], "<= 1%",
                 clean["attack_success_rate"] <= 0.01),
            _row("ASR at 1% poisons", "~99%", at["attack_success_rate"], ">= 99%", at["attack_success_rate"] >= 0.99),
            _row("clean accuracy drop at 1% poisons", "~0", drop, "<= 0.5 points", drop <= 0.005)]
    rows += [_row(f"ASR at {100 * r:g}% poisons ({runs[r]['poisons']} images)", "-", runs[r]["attack_success_rate"],
                  "report", True) for r in RATES if r != RATE]
    rows += [_row(f"clean accuracy at {100 * r:g}% poisons", "-", runs[r]["clean_accuracy"], "report", True)
             for r in RATES if r != RATE]
    rows.append(_row("wall time (s; cached runs are read back)", "-", time.perf_counter() - started, "record", True))
    return rows


def tran2018_spectral(seed=0, device="cpu") -> list:
    """Tran et al. 2018 (arXiv:1811.00636): spectral signatures remove the poisons and retraining
    on the rest removes the backdoor; also activation clustering (Chen et al. 2018,
    arXiv:1811.03728) and fine-pruning (Liu et al. 2018, arXiv:1805.12185).

    On the ``gu2017-badnets`` model at 1% poisons (LeNet-5 penultimate layer, 84 features).
    Measured (seed 0): spectral, robust whitening and automatic labels: 100% of the 500 poisons,
    0.83% of the clean rows; as written (no whitening, eps 10% given for the target label only):
    52%; activation clustering as written 0%, whitened 91% at 0.97% clean; fine-pruning leaves
    the backdoor on this 16-channel layer (ASR 85% after fine-tuning). ~3 minutes.
    """
    import dataclasses

    from gibbon.poisoning.activation_clustering import activation_clustering
    from gibbon.poisoning.backdoor import attack_success_rate
    from gibbon.poisoning.experiments import backdoor_run, detect, train_on
    from gibbon.poisoning.features import penultimate_features
    from gibbon.poisoning.spectral import spectral_signatures
    from gibbon.reproductions._common import _row
    from gibbon.zoo.training import accuracy

    train, val, test, how, trigger, folder = _setting(seed)
    started = time.perf_counter()
    run = backdoor_run(train, test, how, trigger=trigger, target=TARGET, rate=RATE, poison_seed=seed,
                       out_dir=folder / "detection", device=device, progress=True, keep_model=True)
    model, poisoned = run["model"], run["poisoned"]
    features = penultimate_features(model, poisoned.dataset.x)
    y, truth = poisoned.dataset.y, poisoned.poison_mask
    in_target = float(truth.sum()) / int((y == TARGET).sum())
    found = spectral_signatures(features, y)
    ours = found.metrics(truth)
    written = spectral_signatures(features, y, eps={TARGET: 0.1}, whiten=None).metrics(truth)
    written_all = spectral_signatures(features, y, eps=in_target, whiten=None).metrics(truth)
    ac_paper = activation_clustering(features, y, seed=seed).metrics(truth)
    ac_white = activation_clustering(features, y, whiten="robust", seed=seed).metrics(truth)
    pruning = detect(["fine-pruning"], model, poisoned, clean=val, test=test, trigger=trigger, target=TARGET,
                     seed=seed)["fine-pruning"]
    kept = ~found.flagged
    cleaned = dataclasses.replace(poisoned.dataset, x=poisoned.dataset.x[kept], y=y[kept], meta={})
    retrained = train_on(cleaned, how, device=device, progress=True)
    return [
        _row("spectral (robust whitening, labels found automatically): poisons removed", "~100% (CIFAR-10, ResNet)",
             ours["recall"], ">= 90%", ours["recall"] >= 0.9),
        _row("spectral (same): clean rows removed", "1.5 eps per label", ours["clean_removed"], "<= 2%",
             ours["clean_removed"] <= 0.02),
        _row("ASR after retraining on the kept rows", "~0-2%", attack_success_rate(retrained, test, trigger, TARGET),
             "<= 5%", attack_success_rate(retrained, test, trigger, TARGET) <= 0.05),
        _row("clean accuracy after retraining on the kept rows", "-", accuracy(retrained, test), "report", True),
        _row("spectral as written (no whitening; eps 10% given, target label only): poisons removed", "-",
             written["recall"], "report", True),
        _row(f"spectral as written, eps {100 * in_target:.1f}% on every label: poisons removed", "-",
             written_all["recall"], "report", True),
        _row(f"spectral as written, eps {100 * in_target:.1f}% on every label: clean rows removed", "-",
             written_all["clean_removed"], "report", True),
        _row("activation clustering as written (ICA 10, k-means 2, size <= 35%): poisons removed", "~99% (MNIST)",
             ac_paper["recall"], "report", True),
        _row("activation clustering, robust whitening: poisons removed", "-", ac_white["recall"], "report", True),
        _row("activation clustering, robust whitening: clean rows removed", "-", ac_white["clean_removed"], "report",
             True),
        _row(f"fine-pruning: channels pruned (of {pruning['channels']})", "-", len(pruning["pruned"]), "report", True),
        _row("fine-pruning: ASR after pruning only", "-", pruning["pruned_only"]["attack_success_rate"], "report",
             True),
        _row("fine-pruning: ASR after fine-tuning (2 epochs on the 10k val split)", "~0-30% (face, speech nets)",
             pruning["fine_tuned"]["attack_success_rate"], "report", True),
        _row("fine-pruning: clean accuracy after fine-tuning", "-", pruning["fine_tuned"]["clean_accuracy"], "report",
             True),
        _row("wall time (s)", "-", time.perf_counter() - started, "record", True),
    ]


def label_flip(seed=0, device="cpu") -> list:
    """Label flipping, the baseline of poisoning (Biggio, Nelson & Laskov 2012, arXiv:1206.6389):
    accuracy against the flip rate on MNIST (LeNet-5, 5 epochs), random flips against flips of
    7s to 1s. Deep nets are famously tolerant of uniform label noise; a targeted flip of the same
    share takes the source class away. No paper value applies: report.
    """
    from gibbon.poisoning.experiments import flip_run, recipe
    from gibbon.reproductions._common import _row

    train, _, test, _, _, folder = _setting(seed)
    how = recipe(ARCH, epochs=FLIP_EPOCHS, lr=LR, seed=seed)
    started = time.perf_counter()
    rows = []
    clean = flip_run(train, test, how, rate=0, mode="random", out_dir=folder, device=device, progress=True)
    rows.append(_row("clean accuracy", "-", clean["accuracy"], "report", True))
    for r in FLIP_RATES:
        random = flip_run(train, test, how, rate=r, mode="random", flip_seed=seed, out_dir=folder, device=device,
                          progress=True)
        rows.append(_row(f"random flips {100 * r:g}%: test accuracy", "-", random["accuracy"], "report", True))
    for r in (0.2, 0.4, 0.6):
        targeted = flip_run(train, test, how, rate=r, mode="targeted", source=FLIP_SOURCE, target=FLIP_TARGET,
                            flip_seed=seed, out_dir=folder, device=device, progress=True)
        rows.append(_row(f"{FLIP_SOURCE}->{FLIP_TARGET} flips, {100 * r:g}% of the 7s: class-7 test accuracy", "-",
                         targeted["source_accuracy"], "report", True))
    rows.append(_row("wall time (s)", "-", time.perf_counter() - started, "record", True))
    return rows


def targets() -> list:
    """The :class:`gibbon.reproductions._common.Target` s of this module."""
    from gibbon.reproductions._common import Target

    return [Target("gu2017-badnets", "Gu et al. 2017", "BadNets: ASR >= 99% at 1% poisons, clean accuracy kept "
                   "(MNIST LeNet-5)", gu2017_badnets),
            Target("tran2018-spectral", "Tran et al. 2018", "spectral signatures remove >= 90% of the BadNets "
                   "poisons at <= 2% clean; activation clustering; fine-pruning", tran2018_spectral),
            Target("poisoning-label-flip", "Biggio et al. 2012", "accuracy against random and targeted label flips",
                   label_flip)]
