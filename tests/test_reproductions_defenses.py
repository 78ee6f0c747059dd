"""The defense and gradient-masking reproductions (the runs train on real MNIST: `-m slow`)."""

from __future__ import annotations

import re

import pytest

from gibbon.reproduce import TARGETS
from gibbon.reproductions import adaptive, defenses, masked_zoo, vat

IDS = [t.id for module in (defenses, adaptive, vat, masked_zoo) for t in module.targets()]


def test_every_target_is_registered_and_cites_its_papers():
    assert {"goodfellow2015-adversarial-training", "tramer2018-ensemble", "papernot2016-distillation",
            "wong2020-fast-training", "gibbon-diagnose", "athalye2018-bpda", "cohen2019-smoothing",
            "miyato2018-vat-semisupervised", "gibbon-adaptive"} <= set(IDS)
    for target_id in IDS:
        doc = TARGETS[target_id].run.__doc__ or ""
        assert re.search(r"arXiv:\d{4}\.\d{4,5}", doc), f"{target_id}'s docstring cites no paper"


@pytest.mark.slow
@pytest.mark.parametrize("target_id", IDS)
def test_reproduction_meets_its_targets(target_id):
    rows = TARGETS[target_id].run(seed=0, device="cpu")
    failed = [r for r in rows if not r["ok"]]
    assert rows and not failed, f"rows that missed their target: {failed}; all: {rows}"


def test_vat_recipes():
    """The authors' recipe: 50,000 updates over the 50k split, lr x 0.9 after every 500 updates;
    the budget recipe keeps the cache key models were trained under before recipes existed."""
    n = 50_000
    assert vat.AUTHORS.steps(n) == 50_000 and vat.BUDGET.steps(n) == 3_920
    lr = vat.AUTHORS.schedule(n)
    steps_per_epoch = 200
    assert lr(1 / steps_per_epoch) == pytest.approx(2e-3)
    assert lr(499 / steps_per_epoch) == pytest.approx(2e-3)
    assert lr(501 / steps_per_epoch) == pytest.approx(2e-3 * 0.9)
    assert lr(250) == pytest.approx(2e-3 * 0.9 ** 100)
    budget, _ = vat._config(1.0, vat.BUDGET, 0)
    assert budget == {"net": "miyato-mlp-1200-600-300-150", "dataset": "mnist", "defense": budget["defense"],
                      "epochs": 20, "batch_size": 256, "lr": 2e-3, "decay": 0.8, "seed": 0}
    authors, _ = vat._config(1.0, vat.AUTHORS, 0)
    assert authors["recipe"]["decay_every_steps"] == 500 and "curve_every" not in authors["recipe"]
    assert "labelled_batch_size=100" in authors["defense"]
