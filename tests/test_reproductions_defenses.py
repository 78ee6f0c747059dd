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
