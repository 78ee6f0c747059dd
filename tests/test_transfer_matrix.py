"""Transferability matrices across networks and scikit-learn techniques (arXiv:1605.07277)."""

from __future__ import annotations

import pytest
import torch
from _helpers import fit_full_batch, run_cli
from gibbon import data
from gibbon.attacks import FGSM
from gibbon.core.checks import GibbonInputError
from gibbon.oracles import train_technique
from gibbon.transfer import transfer_matrix
from gibbon.transfer.matrix import random_perturbation


@pytest.fixture(scope="module")
def setting():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    fit_full_batch(mlp, train.x, train.y, steps=200)
    lr = train_technique("lr", train, test=test)
    tree = train_technique("tree", train, test=test, max_depth=10)
    return mlp, lr, tree, test


def test_matrix_of_a_network_and_a_black_box_source_over_three_targets(setting):
    mlp, lr, tree, test = setting
    seeds, x, y = test.x[:100], test.x[100:], test.y[100:]
    m = transfer_matrix({"mlp": mlp, "tree": tree}, {"mlp": mlp, "lr": lr, "tree": tree}, FGSM(), x, y, eps=0.3,
                        substitute_seed_x=seeds, substitute_rounds=3)
    # measured (eps 0.3, 200 digits): mlp -> mlp 1.0 (white box), mlp -> lr 0.995, mlp -> tree 0.863;
    # tree (through a substitute from 800 labels, agreement 0.71) -> tree 0.952, -> mlp 0.912
    assert m.rates["mlp"]["mlp"] >= 0.95 and m.rates["mlp"]["lr"] >= 0.8, m.rates
    assert m.rates["mlp"]["tree"] >= 0.5 and m.rates["tree"]["tree"] >= 0.7, m.rates
    assert all(m.clean_accuracy[t] >= 0.8 for t in m.targets), m.clean_accuracy
    assert m.substitutes["tree"]["queries"] == 100 * 2 ** 3 and m.substitutes["tree"]["agreement"] >= 0.6
    assert m.substitutes["tree"]["shift"] == 0  # Algorithm 1 as written unless asked
    assert m.queries == {"mlp": 800, "lr": 800, "tree": 800}  # clean, the noise floor, one batch per source
    # measured noise floors (random signs at 0.3): mlp 0.330, lr 0.107, tree 0.560; every cell of the
    # white-box source rises well above its target's floor
    assert set(m.noise_floor) == set(m.targets) and all(0.05 < f < 0.7 for f in m.noise_floor.values()), m.noise_floor
    assert all(m.rates["mlp"][t] >= m.noise_floor[t] + 0.2 for t in m.targets), (m.rates, m.noise_floor)
    table = m.table()
    assert table.splitlines()[0] == "| source \\ target | mlp | lr | tree |" and "(clean accuracy)" in table
    assert table.splitlines()[-1].startswith("| (random noise of size eps, no attack) |")


class FirstPixel(torch.nn.Module):
    """Class 1 once the first pixel passes 0.5: from 0.4, random signs of 0.3 flip half the images."""

    def forward(self, x):
        p = x.flatten(1)[:, :1]
        return torch.cat([0.5 - p, p - 0.5], dim=1)


class Constant(torch.nn.Module):
    """Ignores its input: noise can never fool it."""

    def forward(self, x):
        return torch.tensor([[1.0, 0.0]]).expand(len(x), 2)


def test_the_noise_floor_counts_what_random_noise_alone_fools():
    x, y = torch.full((400, 1, 4, 4), 0.4), torch.zeros(400, dtype=torch.long)
    source = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    m = transfer_matrix({"linear": source}, {"first-pixel": FirstPixel(), "constant": Constant()}, FGSM(), x, y,
                        eps=0.3)
    assert m.noise_floor["constant"] == 0.0 and 0.4 < m.noise_floor["first-pixel"] < 0.6, m.noise_floor
    again = transfer_matrix({"linear": source}, {"first-pixel": FirstPixel()}, FGSM(), x, y, eps=0.3)
    assert again.noise_floor["first-pixel"] == m.noise_floor["first-pixel"]  # seeded: the same noise
    assert m.to_dict()["noise_floor"] == m.noise_floor


@pytest.mark.parametrize("norm, changed, size", [("linf", 16, 0.3), ("l2", 16, 0.3), ("l1", 1, 0.3), ("l0", 3, None)])
def test_random_perturbation_reaches_the_edge_of_the_ball(norm, changed, size):
    from gibbon.core.norms import get_norm

    x = torch.full((50, 1, 4, 4), 0.5)
    eps = 3 if norm == "l0" else 0.3
    noisy = random_perturbation(x, eps, norm, generator=torch.Generator().manual_seed(1))
    delta = noisy - x
    assert ((delta != 0).flatten(1).sum(1) == changed).all()
    if size is not None:  # the ball's edge, not a point inside it
        assert torch.allclose(get_norm(norm).distance(delta), torch.full((50,), size), atol=1e-5)
    assert (delta.flatten(1) > 0).any() and (delta.flatten(1) < 0).any()  # random directions, both signs
    again = random_perturbation(x, eps, norm, generator=torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_a_black_box_source_needs_seed_images(setting):
    mlp, lr, _, test = setting
    with pytest.raises(GibbonInputError, match="substitute_seed_x"):
        transfer_matrix({"lr": lr}, {"mlp": mlp}, FGSM(), test.x[:10], test.y[:10], eps=0.3)
    with pytest.raises(GibbonInputError, match="eps must be >= 0"):
        transfer_matrix({"mlp": mlp}, {"mlp": mlp}, FGSM(), test.x[:10], test.y[:10], eps=-0.3)
    with pytest.raises(GibbonInputError, match="unknown norm"):
        transfer_matrix({"mlp": mlp}, {"mlp": mlp}, FGSM(), test.x[:10], test.y[:10], eps=0.3, norm="l3")
    with pytest.raises(GibbonInputError, match="whole number of pixels"):
        transfer_matrix({"lr": lr}, {"mlp": mlp}, FGSM(), test.x[:10], test.y[:10], eps=0.3,
                        substitute_seed_x=test.x[10:20], substitute_shift=-1)


def test_the_substitutes_can_train_on_shifted_copies_at_no_extra_queries(setting):
    _, lr, tree, test = setting
    m = transfer_matrix({"tree": tree}, {"lr": lr}, FGSM(), test.x[100:150], test.y[100:150], eps=0.3,
                        substitute_seed_x=test.x[:100], substitute_rounds=1, substitute_epochs=2, substitute_shift=1)
    assert m.substitutes["tree"]["shift"] == 1 and m.substitutes["tree"]["queries"] == 100 * 2


def test_cli_prints_and_saves_the_matrix(tmp_path, monkeypatch, capsys):
    import json

    def cli(*args):
        return run_cli(monkeypatch, *args)

    for technique in ("lr", "tree"):
        assert cli("train", "--technique", technique, "--dataset", "digits", "--out", str(tmp_path / f"{technique}.skops")) == 0
    out = tmp_path / "matrix.json"
    assert cli("transfer", "--source", f"lr=sklearn:{tmp_path / 'lr.skops'}", "--target", f"lr=sklearn:{tmp_path / 'lr.skops'}",
               "--target", f"tree=sklearn:{tmp_path / 'tree.skops'}", "--dataset", "digits", "--seed-images", "100",
               "--n", "150", "--json", str(out)) == 0
    result = json.loads(out.read_text())
    assert set(result["rates"]["lr"]) == {"lr", "tree"} and result["substitutes"]["lr"]["queries"] == 100 * 2 ** 5
    assert result["rates"]["lr"]["lr"] >= 0.5, result["rates"]
    assert "| source \\ target | lr | tree |" in capsys.readouterr().out
    assert cli("transfer", "--source", "nonsense", "--target", "x=y", "--dataset", "digits") == 2
    assert cli("transfer", "--source", f"lr=sklearn:{tmp_path / 'lr.skops'}", "--target", f"lr=sklearn:{tmp_path / 'lr.skops'}",
               "--dataset", "digits", "--substitute-shift", "-1") == 2
