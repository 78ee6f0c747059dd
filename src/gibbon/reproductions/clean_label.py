"""Clean-label targeted poisoning on MNIST, CPU-sized.

* ``shafahi2018-poison-frogs``: Shafahi, Huang, Najibi, Suciu, Studer, Dumitras & Goldstein 2018,
  "Poison Frogs! Targeted Clean-Label Poisoning Attacks on Neural Networks", arXiv:1804.00792,
  one-shot kill in the transfer-learning setting: one feature-collision poison per target, the
  frozen extractor's last layer retrained. Paper: 100% success (InceptionV3, dog vs fish, 900
  training images per class). Ours: madry-cnn (1024-d features) trained on all of MNIST as the
  extractor, binary 3 vs 8 with 900 random MNIST training images per class, a softmax head
  retrained from zero per target.
* ``geiping2021-witches-brew``: Geiping, Fowl, Huang, Czaja, Taylor, Moeller & Goldstein 2021,
  "Witches' Brew: Industrial Scale Data Poisoning via Gradient Matching", arXiv:2009.02276.
  Paper: ~90% success (CIFAR-10 ResNet-18, 1% budget, eps 16/255, victims from scratch). Ours:
  lenet5 on the first 5,000 MNIST training images, 1% budget (50 poisons), eps 16/255, victims
  from scratch with another seed, against random-noise poisons of the same budget and radius.
"""

from __future__ import annotations

import dataclasses
import time

import torch

#: feature collision: extractor, transfer task, attack and head
FC_ARCH, FC_EPOCHS, FC_CLASSES, FC_PER_CLASS, FC_TARGETS = "madry-cnn", 2, [3, 8], 900, 50
FC_BETA0, FC_STEPS, FC_LR, FC_HEAD_STEPS, FC_HEAD_LR = 0.25, 1000, 0.05, 1000, 0.05
#: gradient matching: crafting model / victims, budget, radius, optimiser
GM_ARCH, GM_N_TRAIN, GM_EPOCHS, GM_TEST, GM_TARGETS = "lenet5", 5000, 10, 1000, 10
GM_BUDGET, GM_EPS, GM_STEPS, GM_RESTARTS = 0.01, 16 / 255, 250, 1


def _transfer_split(seed: int):
    from gibbon import data

    train = data.load("mnist", "train", classes=FC_CLASSES)
    g = torch.Generator().manual_seed(int(seed))
    rows = torch.cat([(train.y == c).nonzero().flatten()[torch.randperm(int((train.y == c).sum()), generator=g)]
                      [:FC_PER_CLASS] for c in range(len(FC_CLASSES))]).sort().values
    train = dataclasses.replace(train, x=train.x[rows], y=train.y[rows], meta={})
    return train, data.load("mnist", "test", classes=FC_CLASSES)


def shafahi2018_poison_frogs(seed=0, device="cpu") -> list:
    """Shafahi et al. 2018 (arXiv:1804.00792), one-shot kill on a frozen extractor: 100% in their
    setting. Setting: madry-cnn trained 2 epochs on all 50k MNIST (cached by the zoo), 3 (target
    class) vs 8 (base class), 900 training images per class, 50 targets (test 3s the clean head
    gets right), bases random test 8s; beta0 0.25 (beta = beta0 * 1024^2 / 784^2 on [0, 1] pixels),
    1000 forward-backward steps at lr 0.05; head: softmax regression from zero, 1000 Adam steps.

    Measured (seed 0, 1 thread): 98% success (49/50 targets), the unperturbed-base control 0%;
    poison -> target feature distance 1.6 (base -> target 35.7); head clean accuracy 99.70%,
    retrained 99.43% (mean). But the poisons are far from their bases: mean L2 7.8, L-inf 1.0 on
    [0, 1] pixels (the paper's beta0 read on [0, 1] pixels, not 0-255, weighs proximity little;
    beta0 25 or 250 gave L2 3.2 / 1.0 and 0% success on a 20-target pilot: the MNIST features
    are hard to move with small changes). Wall time 292 s with 3 jobs on 2 shared cores
    (extractor cached).
    """
    from gibbon import zoo
    from gibbon.poisoning.feature_collision import feature_collision_experiment
    from gibbon.reproductions._common import _row

    start = time.perf_counter()
    extractor = zoo.load(zoo.trained(FC_ARCH, "mnist", epochs=FC_EPOCHS, seed=0, progress=False), device=device)
    train, test = _transfer_split(seed)
    kw = dict(base_class=1, target_class=0, n_targets=FC_TARGETS, beta0=FC_BETA0, steps=FC_STEPS, lr=FC_LR,
              head_steps=FC_HEAD_STEPS, head_lr=FC_HEAD_LR, seed=seed)
    attack = feature_collision_experiment(extractor, train, test, **kw)
    noop = feature_collision_experiment(extractor, train, test, noop=True, **kw)
    s = attack.setting
    return [
        _row(f"one-shot success rate, {len(attack.successes)} targets (3 vs 8)", "100%", attack.success_rate, ">= 90%",
             attack.success_rate >= 0.9),
        _row("control: unperturbed base as the poison, success rate", "-", noop.success_rate, "<= 5%",
             noop.success_rate <= 0.05),
        _row("clean head test accuracy", "-", attack.clean_accuracy, "report", True),
        _row("retrained head test accuracy (mean over targets)", "-", attack.poisoned_accuracy, "report", True),
        _row("mean L2 poison - base ([0, 1] pixels)", "-", attack.l2, "report", True),
        _row("mean L-inf poison - base", "-", attack.linf, "report", True),
        _row("mean feature distance base -> target", "-", s["mean_feature_distance_base_target"], "report", True),
        _row("mean feature distance poison -> target", "-", s["mean_feature_distance_poison_target"], "report", True),
        _row("wall time (s)", "-", time.perf_counter() - start, "record", True),
    ]


def geiping2021_witches_brew(seed=0, device="cpu") -> list:
    """Geiping et al. 2021 (arXiv:2009.02276), gradient matching against victims trained from
    scratch: ~90% on CIFAR-10 ResNet-18 at 1% budget, eps 16/255. Setting: lenet5 crafting model
    trained 10 epochs (Adam 1e-3, batch 128) on the first 5,000 MNIST training images (cached by
    the zoo); 10 targets (random test images among the first 1,000 the crafting model gets
    right), each with a random adversarial class and 50 random training images of that class as
    poisons (1%), eps 16/255, 250 signed-Adam steps (lr 0.1 eps, tenfold drops at 3/8, 5/8,
    7/8), 1 restart; one lenet5 victim per target (seed 1, same recipe) from scratch; the control
    gets uniform noise of the same radius on the same rows.

    Measured (seed 0, 1 thread): 0/10 for gradient matching and 0/10 for the noise control;
    victim test accuracy 95.4% poisoned / 95.5% control (crafting model 94.7%). Pilots with the
    same 10 targets: 0/10 at eps 0.3 (1%) and 0/10 at eps 0.1 with a 5% budget. Crafting does
    reach high alignment (cosine 0.48 -> 0.82 at 16/255, 0.97 at eps 0.3, on one target) but the
    victim's adversarial probability on the target barely moves (6e-5 -> 7e-5; 2e-4 at eps 0.3):
    in this MNIST setting, where the victims fit the poisons to near-zero loss, the paper's
    result does not reproduce. Wall time 253 s with 3 jobs on 2 shared cores.
    """
    from gibbon import data, zoo
    from gibbon.poisoning.gradient_matching import gradient_matching_experiment
    from gibbon.reproductions._common import _row

    start = time.perf_counter()
    model = zoo.load(zoo.trained(GM_ARCH, "mnist", epochs=GM_EPOCHS, n_train=GM_N_TRAIN, seed=0, progress=False),
                     device=device)
    train, test = data.load("mnist", "train", n=GM_N_TRAIN), data.load("mnist", "test", n=GM_TEST)
    attack, noise = gradient_matching_experiment(model, train, test, arch=GM_ARCH, victim_epochs=GM_EPOCHS,
                                                 n_targets=GM_TARGETS, budget=GM_BUDGET, eps=GM_EPS, steps=GM_STEPS,
                                                 restarts=GM_RESTARTS, victim_seed=1, seed=seed)
    return [
        _row(f"gradient matching success rate, {len(attack.successes)} targets", "~90% (CIFAR-10)",
             attack.success_rate, "report", True),
        _row("random-noise poisons (same rows, same eps) success rate", "-", noise.success_rate, "report", True),
        _row("success above the noise control", "-", attack.success_rate - noise.success_rate, "report", True),
        _row("crafting model clean test accuracy", "-", attack.clean_accuracy, "report", True),
        _row("victim test accuracy, poisoned (mean)", "-", attack.poisoned_accuracy, "report", True),
        _row("victim test accuracy, noise control (mean)", "-", noise.poisoned_accuracy, "report", True),
        _row("mean L-inf of the poisons", "16/255", attack.linf, "<= 16/255", attack.linf <= GM_EPS + 1e-6),
        _row("wall time (s)", "-", time.perf_counter() - start, "record", True),
    ]


def targets() -> list:
    from gibbon.reproductions._common import Target

    return [
        Target("shafahi2018-poison-frogs", "Shafahi et al. 2018, arXiv:1804.00792",
               "one feature-collision poison per target flips a retrained linear head (100%)",
               shafahi2018_poison_frogs),
        Target("geiping2021-witches-brew", "Geiping et al. 2021, arXiv:2009.02276",
               "gradient-matching poisons at 1% budget, eps 16/255, fool from-scratch victims (~90%)",
               geiping2021_witches_brew),
    ]
