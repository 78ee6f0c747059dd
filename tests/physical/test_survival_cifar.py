"""`gibbon physical survival` on CIFAR-10 files in their standard format (small ones made here: the
real data set is not available offline): the colour photo pipeline runs end to end on 3-channel images."""

from __future__ import annotations

import math
import json

import torch
from _helpers import fit_full_batch, one_thread, run_cli, write_cifar  # noqa: F401  (one_thread: a module fixture)

from gibbon import data, zoo


def test_survival_table_on_cifar10_format_files(monkeypatch, tmp_path):
    root = write_cifar(tmp_path / "data")
    monkeypatch.setenv("GIBBON_DATA", str(root))
    train = data.load("cifar10", "train")
    assert train.x.shape[1:] == (3, 32, 32)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = fit_full_batch(zoo.build("softmax-regression", train), train.x, train.y, steps=100)
    model = zoo.save(net, tmp_path / "cifar.safetensors", dataset=train)
    code = run_cli(monkeypatch, "physical", "survival", "--model", str(model), "--dataset", "cifar10", "--n", "16",
                   "--eps", "0.03,0.1", "--eot", "2", "--draws", "1", "--out-dir", str(tmp_path / "out"))
    assert code == 0
    result = json.loads((tmp_path / "out" / "survival.json").read_text())
    assert result["dataset"] == "cifar10" and result["n"] == 16
    assert len(result["rows"]) >= 2 * 3  # every attack at every eps (plus the EOT rows)
    assert {row["attack"] for row in result["rows"]} >= {"fgsm", "bim", "illc"}
    # undefined (None / NaN) where no image was counted: on 16 images some rows count none on some CPUs
    assert all(row["survival"] is None or math.isnan(row["survival"]) or 0 <= row["survival"] <= 1
               for row in result["rows"])
    assert any(row["survival"] is not None and not math.isnan(row["survival"]) for row in result["rows"])
