"""Backdoor detection: spectral signatures and activation clustering find the BadNets poisons at a
small clean cost; fine-pruning prunes dormant channels and keeps the caller's model untouched."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import run_cli
from _poisoning import TARGET, TRIGGER

from gibbon import zoo
from gibbon.core.checks import GibbonInputError
from gibbon.poisoning.activation_clustering import activation_clustering
from gibbon.poisoning.backdoor import attack_success_rate
from gibbon.poisoning.detection import detection_metrics
from gibbon.poisoning.features import penultimate_features
from gibbon.poisoning.fine_pruning import channel_activity, fine_prune, last_conv
from gibbon.poisoning.spectral import robust_whiten, spectral_signatures, two_means_split


def _representations(poison_share: float, seed: int = 0, shift: float = 6.0, quiet_dims: int = 1, per_label: int = 600):
    """Ten labels of 600 rows in 32 dimensions with a few high-variance directions, as a trained
    net's penultimate layer has; ``poison_share`` of label 0 are shifted along a low-variance one."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.ones(32)
    scale[:4] = 6.0
    rows, labels = [], []
    for label in range(10):
        centre = 20 * torch.randn(32, generator=g)
        rows.append(centre + scale * torch.randn(per_label, 32, generator=g))
        labels.append(torch.full((per_label,), label))
    x, y = torch.cat(rows), torch.cat(labels)
    k = round(poison_share * per_label)
    x[:k, 10:10 + quiet_dims] += shift  # the backdoor's direction: quiet coordinates, under the loud ones
    poison = torch.zeros(len(y), dtype=torch.bool)
    poison[:k] = True
    return x, y, poison


def test_spectral_signatures_find_the_poisons_and_no_more():
    x, y, poison = _representations(0.08)
    m = spectral_signatures(x, y).metrics(poison)
    # a detector flagging random rows at this budget would recall ~its 1% share of the rows
    assert m["recall"] >= 0.9 and m["clean_removed"] <= 0.02, m


def test_whitening_is_what_recovers_poisons_under_louder_clean_variance():
    x, y, poison = _representations(0.08)
    plain = spectral_signatures(x, y, eps={0: 0.1}, whiten=None).metrics(poison)
    whitened = spectral_signatures(x, y, eps={0: 0.1}).metrics(poison)
    # Tran et al.'s top direction is a loud clean one here; whitened, it is the poisons'
    assert plain["recall"] < 0.5 <= 0.9 <= whitened["recall"], (plain, whitened)


def test_spectral_with_a_given_bound_removes_that_many():
    x, y, _ = _representations(0.08)
    found = spectral_signatures(x, y, eps={0: 0.2}, whiten=None)
    assert int(found.flagged.sum()) == round(1.5 * 0.2 * 600) and bool((y[found.flagged] == 0).all())


def test_activation_clustering_isolates_the_shifted_rows():
    # k-means needs a cluster apart (trained nets give one: silhouette ~0.8 on MNIST), not a 6-sigma shift
    x, y, poison = _representations(0.08, shift=8.0, quiet_dims=4, per_label=250)
    m = activation_clustering(x, y, whiten="robust").metrics(poison)
    assert m["recall"] >= 0.8 and m["clean_removed"] <= 0.05, m


def test_detectors_flag_little_on_a_clean_set():
    x, y, poison = _representations(0.0)
    assert spectral_signatures(x, y).metrics(poison)["clean_removed"] <= 0.02


def test_features_are_the_output_layers_input(backdoored_mlp, poisoned_digits):
    f = penultimate_features(backdoored_mlp, poisoned_digits.dataset.x[:5])
    head = [m for m in backdoored_mlp.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        assert torch.allclose(head(f), backdoored_mlp(poisoned_digits.dataset.x[:5]), atol=1e-5)


def test_whitening_and_two_means_helpers():
    g = torch.Generator().manual_seed(0)
    clean = torch.randn(400, 5, generator=g) * torch.tensor([10.0, 1, 1, 1, 1])
    z = robust_whiten(clean)
    assert (z.std(0) - 1).abs().max() < 0.35  # the 10x direction no longer dominates
    split = torch.cat([torch.zeros(90), torch.full((10,), 8.0)]) + 0.1 * torch.randn(100, generator=g)
    smaller, separation = two_means_split(split)
    assert int(smaller.sum()) == 10 and bool(smaller[90:].all()) and separation > 10


def test_fine_pruning_prunes_dormant_channels_and_leaves_the_model_alone(backdoored_convnet, digit_splits):
    _, val, test = digit_splits
    before = {k: v.clone() for k, v in backdoored_convnet.state_dict().items()}
    asr_before = attack_success_rate(backdoored_convnet, test, TRIGGER, TARGET)
    result = fine_prune(backdoored_convnet, val, max_drop=0.04, fine_tune_epochs=0)
    assert all(torch.equal(before[k], v) for k, v in backdoored_convnet.state_dict().items())
    conv = last_conv(result.model)
    assert len(result.pruned) >= 1 and bool((conv.weight[result.pruned] == 0).all())
    activity = channel_activity(backdoored_convnet, last_conv(backdoored_convnet), val.x)
    # the first pruned channels are the least active on clean data
    assert activity[result.pruned[0]] == activity.min()
    assert result.accuracy["pruned"] <= result.accuracy["before"] - 0.04 or len(result.pruned) == conv.out_channels - 1
    assert asr_before >= 0.9
    tuned = fine_prune(backdoored_convnet, val, fine_tune_epochs=3, lr=1e-3)
    assert tuned.accuracy["fine_tuned"] > tuned.accuracy["pruned"]
    assert bool((last_conv(tuned.model).weight[tuned.pruned] == 0).all())  # pruned channels stay pruned


def test_bad_detector_inputs_are_one_line_errors(clean_mlp, digit_splits):
    features, y, _ = _representations(0.05)
    for call, message in ((lambda: spectral_signatures(features[:-1], y), "features must be"),
                          (lambda: spectral_signatures(features, y, eps=1.5), "eps must be a fraction"),
                          (lambda: spectral_signatures(features, y, eps="some"), "eps must be a fraction"),
                          (lambda: spectral_signatures(features * float("nan"), y), "NaN"),
                          (lambda: activation_clustering(features, y, max_size=0.7), "max_size"),
                          (lambda: fine_prune(clean_mlp, digit_splits[1]), "no Conv2d"),
                          (lambda: detection_metrics(torch.zeros(3), torch.zeros(4)), "differ")):
        with pytest.raises(GibbonInputError, match=message):
            call()


def test_cli_badnets_with_detection_writes_json_and_images(monkeypatch, tmp_path):
    out = tmp_path / "bd"
    code = run_cli(monkeypatch, "poison", "badnets", "--dataset", "digits", "--arch", "mlp-200-200", "--epochs", "20",
                   "--rate", "0.05", "--trigger", "patch:size=2,margin=0", "--detect", "spectral",
                   "--out-dir", str(out), "--no-baseline", "--save-model", str(tmp_path / "bd.safetensors"))
    assert code == 0
    report = json.loads((out / "badnets.json").read_text())
    run = report["runs"]["0.05"]
    assert run["poisons"] == 60 and run["attack_success_rate"] >= 0.8  # measured 0.99
    assert set(report["detection"]["spectral"]["metrics"]) >= {"recall", "clean_removed"}
    assert (out / "badnets.png").stat().st_size > 1000
    model = zoo.load(tmp_path / "bd.safetensors")
    assert json.loads((tmp_path / "bd.json").read_text())["poisoning"]["count"] == 60 and model is not None
    # a rerun reads the finished run back instead of training again
    mtime = next(out.glob("badnets-*.json")).stat().st_mtime
    assert run_cli(monkeypatch, "poison", "badnets", "--dataset", "digits", "--arch", "mlp-200-200", "--epochs", "20",
                   "--rate", "0.05", "--trigger", "patch:size=2,margin=0", "--out-dir", str(out), "--no-baseline") == 0
    assert next(out.glob("badnets-*.json")).stat().st_mtime == mtime
