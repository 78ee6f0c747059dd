"""The simulated photo: random, differentiable, in the box; survival counts what it should."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import run_cli

from gibbon import zoo
from gibbon.core.checks import GibbonInputError
from gibbon.physical.photo import PhotoPipeline, PhotoTransform, survival


def test_photo_is_random_differentiable_and_in_the_box():
    pipe = PhotoPipeline()
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    a, b = pipe(x), pipe(x)
    assert a.shape == x.shape and not torch.equal(a, b) and float(a.min()) >= 0 and float(a.max()) <= 1
    a.sum().backward()
    assert float(x.grad.abs().sum()) > 0
    with torch.random.fork_rng():
        torch.manual_seed(3)
        c = pipe(x)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        d = pipe(x)
    assert torch.equal(c, d)  # the same seed, the same photo


def test_survival_counts_only_examples_that_fooled_and_whose_clean_photo_is_right(setting):
    net, _, test = setting
    pipe = PhotoPipeline()
    unchanged = survival(net, test.x, test.x.clone(), test.y, pipe)
    assert unchanged["counted"] == 0  # no-op "adversarial" examples fool nothing, so nothing is counted
    noise = (test.x + 0.6 * torch.randn(test.x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    s = survival(net, test.x, noise, test.y, pipe, draws=2)
    assert s["counted"] > 0 and 0 <= s["survival"] <= 1 and s["survival"] + s["destruction_rate"] == pytest.approx(1)


def test_bad_inputs(setting):
    net, _, test = setting
    with pytest.raises(GibbonInputError, match="must match"):
        survival(net, test.x, test.x[:-1], test.y, PhotoPipeline())
    with pytest.raises(GibbonInputError, match="draws"):
        survival(net, test.x, test.x, test.y, PhotoPipeline(), draws=0)
    with pytest.raises(GibbonInputError, match="photo transform"):
        PhotoPipeline(PhotoTransform(degrees=-1))


def test_cli_survival_table(monkeypatch, tmp_path, setting):
    net, train, _ = setting
    zoo.save(net, tmp_path / "m.safetensors", {"architecture": "mlp-200-200"}, dataset=train)
    code = run_cli(monkeypatch, "physical", "survival", "--model", str(tmp_path / "m.safetensors"), "--dataset",
                   "digits", "--n", "100", "--eps", "0.3", "--attacks", "fgsm", "--eot", "4", "--draws", "1",
                   "--out-dir", str(tmp_path))
    assert code == 0
    rows = json.loads((tmp_path / "survival.json").read_text())["rows"]
    assert [r["attack"] for r in rows] == ["fgsm", "bim-eot"] and all(r["counted"] > 0 for r in rows)
    # examples made to survive the photo (EOT over it) survive at least as often as one-shot FGSM's
    assert rows[1]["survival"] >= rows[0]["survival"] - 0.05, rows
