"""Loss-threshold membership inference: finds an overfit model's members, not a model's that never saw them."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import fit_full_batch, run_cli

from gibbon import data, zoo
from gibbon.core.checks import GibbonInputError
from gibbon.oracles import Oracle
from gibbon.privacy import advantage, loss_threshold_attack, roc_summary, save_roc


@pytest.fixture(scope="module")
def splits():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    return (train.x[:150], train.y[:150]), (test.x[:150], test.y[:150]), (train.x[600:], train.y[600:])


def _mlp(x, y, steps):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = zoo.build("mlp-200-200", data.load("digits", "train"))
    return fit_full_batch(net, x, y, steps=steps, lr=0.01)


def _few(pair, k=60):
    return pair[0][:k], pair[1][:k]


def test_an_overfit_model_gives_its_members_away(splits):
    members, non_members = _few(splits[0]), _few(splits[1])
    overfit = _mlp(*members, steps=600)  # 60 examples, trained to zero loss (measured AUC 0.691)
    result = loss_threshold_attack(overfit, members, non_members)
    # a score that carries no membership signal sits at AUC 0.5 and advantage 0
    assert result.auc > 0.62 and advantage(result) > 0.2, result.summary()
    assert result.tpr_at_fpr["0.01"] >= result.tpr_at_fpr["0.001"] >= 0
    assert result.members == result.non_members == 60


def test_a_model_that_never_saw_them_gives_nothing_away(splits):
    members, non_members, elsewhere = splits
    other = _mlp(*elsewhere, steps=200)  # trained on other images: 'members' are as unseen as the test set
    result = loss_threshold_attack(other, members, non_members)
    assert abs(result.auc - 0.5) < 0.1, result.summary()


def test_black_box_scores_give_the_same_answer_and_are_counted(splits):
    members, non_members = _few(splits[0]), _few(splits[1])
    overfit = _mlp(*members, steps=600)
    oracle = Oracle(overfit)
    direct, through = loss_threshold_attack(overfit, members, non_members), loss_threshold_attack(oracle, members,
                                                                                                   non_members)
    assert through.auc == pytest.approx(direct.auc, abs=1e-6)
    assert oracle.total == 120  # one query per member and non-member


def test_roc_summary_reads_low_fpr_from_the_curve():
    perfect = roc_summary([5.0, 6.0, 7.0], [1.0, 2.0, 3.0])
    assert perfect.auc == 1.0 and perfect.tpr_at_fpr == {"0.001": 1.0, "0.01": 1.0}
    inverted = roc_summary([1.0, 2.0], [5.0, 6.0])
    assert inverted.auc == 0.0 and inverted.tpr_at_fpr["0.01"] == 0.0
    with pytest.raises(GibbonInputError, match="at least one member"):
        roc_summary([], [1.0])


def test_bad_inputs_are_one_line_errors(splits):
    members, non_members, _ = splits
    net = _mlp(*members, steps=1)
    with pytest.raises(GibbonInputError, match="NaN"):
        loss_threshold_attack(net, (members[0] * float("nan"), members[1]), non_members)
    with pytest.raises(GibbonInputError, match="class indices"):
        loss_threshold_attack(net, (members[0], members[1] + 10), non_members)
    with pytest.raises(GibbonInputError, match="Dataset or an"):
        loss_threshold_attack(net, members[0], non_members)


def test_cli_mia_writes_json_and_png(tmp_path, monkeypatch, capsys, splits):
    weights = tmp_path / "overfit.safetensors"
    zoo.save(_mlp(*_few(splits[0]), steps=600), weights, dataset=data.load("digits", "train"))
    out = tmp_path / "mia"
    assert run_cli(monkeypatch, "privacy", "mia", "--model", str(weights), "--dataset", "digits", "--n", "60",
                   "--out-dir", str(out)) == 0
    saved = json.loads((out / "membership.json").read_text())
    assert saved["auc"] > 0.62 and set(saved["tpr_at_fpr"]) == {"0.001", "0.01"}
    assert (out / "membership.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AUC" in capsys.readouterr().out
    assert run_cli(monkeypatch, "privacy", "mia", "--model", str(weights), "--dataset", "digits",
                   "--members", "test", "--non-members", "test") == 2
    assert run_cli(monkeypatch, "privacy", "mia", "--dataset", "digits") == 2


def test_save_roc_writes_atomically_and_overwrites(tmp_path):
    result = roc_summary([3.0, 2.0, 0.5], [1.0, 0.0, 2.5])
    first = save_roc(result, tmp_path, name="r")
    again = save_roc(result, tmp_path, name="r")
    assert first == again and sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.png"]
    assert json.loads((tmp_path / "r.json").read_text())["auc"] == pytest.approx(result.auc)


def test_cli_lira_trains_shadows_once_and_beats_chance(tmp_path, monkeypatch, capsys, splits):
    weights = tmp_path / "overfit.safetensors"
    zoo.save(_mlp(*_few(splits[0], 100), steps=600), weights, dataset=data.load("digits", "train"))
    args = ["privacy", "mia", "--model", str(weights), "--dataset", "digits", "--n", "100", "--attack", "lira",
            "--shadows", "8", "--shadow-epochs", "300", "--shadow-lr", "1e-2", "--out-dir", str(tmp_path / "mia")]
    assert run_cli(monkeypatch, *args) == 0
    saved = json.loads((tmp_path / "mia" / "membership.json").read_text())
    assert saved["attack"].startswith("LiRA online") and saved["members"] == saved["non_members"] == 100
    assert saved["auc"] > 0.65, saved["auc"]  # a score without membership signal sits at 0.5
    shadow_files = sorted((tmp_path / "mia" / "shadows").glob("shadow-*.npz"))
    assert len(shadow_files) == 8
    stamps = [f.stat().st_mtime_ns for f in shadow_files]
    capsys.readouterr()
    assert run_cli(monkeypatch, *args[:-2], "--attack", "lira-offline", "--out-dir", str(tmp_path / "mia")) == 0
    assert [f.stat().st_mtime_ns for f in shadow_files] == stamps  # resumed: no shadow trained again
    assert json.loads((tmp_path / "mia" / "membership.json").read_text())["attack"].startswith("LiRA offline")
    assert run_cli(monkeypatch, *args[:-2], "--shadows", "1") == 2
