"""The papers' headline results, re-run with one command (``gibbon reproduce ID``).

Each target trains (once, cached) what the paper trained, runs the paper's attack and returns
rows of ``(quantity, paper value, our value, our acceptance target, ok)``. The table with the
measured values and run times lives in ``docs/reproduction.md``.
"""

from __future__ import annotations

import time

import torch

# The shared helpers live below the reproductions (gibbon.reproductions._common) so that the
# families never import this module; they stay importable from here.
from gibbon.reproductions._common import MAIN_ARCH, MAIN_EPOCHS, Target, _accuracy_under, _linear_model, _row
from gibbon.zoo.io import write_json

__all__ = ["TARGETS", "Target", "run", "write_json", "_accuracy_under", "_linear_model", "_row",
           "goodfellow2015_softmax", "goodfellow2015_logistic", "madry2018_natural"]


def goodfellow2015_softmax(seed=0, device="cpu") -> list:
    """Goodfellow, Shlens & Szegedy 2015 (arXiv:1412.6572), section 4: softmax regression on
    MNIST, FGSM at eps 0.25 gives a 99.9% error rate."""
    from gibbon import data as gdata
    from gibbon.attacks import FGSM

    model = _linear_model("softmax-regression", None, seed=seed, device=device)
    test = gdata.load("mnist", "test")
    clean = _accuracy_under(model, test, FGSM(), 0.0, device=device)
    adv = _accuracy_under(model, test, FGSM(), 0.25, device=device)
    return [_row("clean error (10k test)", "not stated", 1 - clean, "report", True),
            _row("FGSM eps 0.25 error (10k test)", "99.9%", 1 - adv, ">= 97%", 1 - adv >= 0.97)]


def goodfellow2015_logistic(seed=0, device="cpu") -> list:
    """Goodfellow et al. 2015 (arXiv:1412.6572), figure 2: binary logistic regression on MNIST
    3 vs 7, clean error 1.6%, FGSM eps 0.25 error 99%."""
    from gibbon import data as gdata
    from gibbon.attacks import FGSM

    model = _linear_model("logistic-regression", [3, 7], seed=seed, device=device)
    test = gdata.load("mnist", "test", classes=[3, 7])
    clean = _accuracy_under(model, test, FGSM(), 0.0, device=device)
    adv = _accuracy_under(model, test, FGSM(), 0.25, device=device)
    return [_row("clean error, 3 vs 7", "1.6%", 1 - clean, "<= 3%", 1 - clean <= 0.03),
            _row("FGSM eps 0.25 error, 3 vs 7", "99%", 1 - adv, ">= 95%", 1 - adv >= 0.95)]


def madry2018_natural(seed=0, device="cpu") -> list:
    """Madry et al. 2018 (arXiv:1706.06083), table 1 / appendix: the naturally trained MNIST
    CNN falls to 6.4% under FGSM eps 0.3 and to ~0% under PGD-40; and the strength ordering
    FGSM >= PGD-40 >= PGD-40 with restarts holds at every eps (first 1,000 test images)."""
    from gibbon import data as gdata
    from gibbon import zoo
    from gibbon.attacks import FGSM, PGD

    model = zoo.load(zoo.trained(MAIN_ARCH, "mnist", epochs=MAIN_EPOCHS, seed=seed, progress=False), device=device)
    test = gdata.load("mnist", "test", n=1000)
    rows = []
    pgd40 = PGD(steps=40, step_size=0.01)
    pgd40r = PGD(steps=40, step_size=0.01, restarts=10)
    for eps in (0.1, 0.2, 0.3):
        accs = [_accuracy_under(model, test, a, eps, device=device, seed=seed) for a in (FGSM(), pgd40, pgd40r)]
        rows.append(_row(f"eps {eps}: FGSM >= PGD-40 >= PGD-40x10 (FGSM acc)", "-", accs[0], "ordered",
                         accs[0] >= accs[1] >= accs[2]))
        rows.append(_row(f"eps {eps}: PGD-40 accuracy", "-", accs[1], "ordered", accs[0] >= accs[1] >= accs[2]))
        rows.append(_row(f"eps {eps}: PGD-40x10 accuracy", "-", accs[2], "ordered", accs[0] >= accs[1] >= accs[2]))
        if eps == 0.3:
            rows.append(_row("FGSM eps 0.3 accuracy", "6.4%", accs[0], "< 10%", accs[0] < 0.10))
            rows.append(_row("PGD-40 eps 0.3 accuracy", "not stated", accs[1], "<= 1%", accs[1] <= 0.01))
    return rows


TARGETS = {t.id: t for t in (
    Target("goodfellow2015-softmax", "Goodfellow et al. 2015", "softmax regression, FGSM eps .25: 99.9% error",
           goodfellow2015_softmax),
    Target("goodfellow2015-logistic", "Goodfellow et al. 2015", "logistic regression 3v7: 1.6% -> 99% error",
           goodfellow2015_logistic),
    Target("madry2018-natural", "Madry et al. 2018", "natural CNN: FGSM eps .3 6.4%, PGD-40 ~0%", madry2018_natural),
)}


def run(target_id: str, *, seed: int = 0, device: str = "cpu") -> dict:
    """Run one reproduction target; returns a JSON-ready dict with rows, pass flag and time."""
    import gibbon

    start = time.time()
    rows = TARGETS[target_id].run(seed=seed, device=device)
    return {"id": target_id, "paper": TARGETS[target_id].paper, "rows": rows, "passed": all(r["ok"] for r in rows),
            "seconds": time.time() - start, "seed": seed, "versions": {"gibbon": gibbon.__version__, "torch": torch.__version__}}


def _collect_families() -> None:
    """Add the targets of the paper families in :mod:`gibbon.reproductions`."""
    from gibbon.reproductions import (adaptive, audit, blackbox, clean_label, defenses, dp_sgd, extraction, influence, masked_zoo,
                                      membership, minimal_attacks, model_theft, pate, physical, poisoning, reliable,
                                      tree_extraction, vat)

    for target in (minimal_attacks.targets() + reliable.targets() + blackbox.targets() + defenses.targets()
                   + adaptive.targets() + vat.targets() + masked_zoo.targets() + dp_sgd.targets()
                   + pate.targets() + membership.targets() + audit.targets() + poisoning.targets()
                   + clean_label.targets() + influence.targets() + physical.targets()
                   + extraction.targets() + tree_extraction.targets() + model_theft.targets()):
        TARGETS[target.id] = target


_collect_families()
