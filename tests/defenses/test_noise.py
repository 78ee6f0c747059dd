"""Gaussian data augmentation (Cohen et al. 2019, arXiv:1902.02918), the base model of smoothing."""

from __future__ import annotations

import pytest
import torch

from gibbon import data, zoo
from gibbon.core.checks import GibbonInputError
from gibbon.defenses import parse_defense
from gibbon.defenses.noise import NoiseTraining, noise_objective
from gibbon.zoo.cache import training_config


def _mlp(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                   torch.nn.Linear(128, 10))


def test_noise_is_gaussian_of_sigma_and_not_clipped():
    seen = []
    net = _mlp()

    def spy(inp):
        seen.append(inp.detach())
        return net(inp)

    x, y = torch.full((500, 1, 8, 8), 0.5), torch.zeros(500, dtype=torch.long)
    loss, logits = noise_objective(0.5, generator=torch.Generator().manual_seed(0))(spy, x, y)
    noise = seen[0] - x
    assert loss.ndim == 0 and logits.shape == (500, 10)
    assert abs(float(noise.std()) - 0.5) < 0.01 and abs(float(noise.mean())) < 0.01
    assert float(seen[0].min()) < -0.5 and float(seen[0].max()) > 1.5, "the noisy input was clipped to the box"
    assert all(p.grad is None for p in net.parameters())


def test_registered_and_written_to_the_card():
    config = parse_defense("noise:sigma=0.5")
    assert isinstance(config, NoiseTraining) and config.sigma == 0.5
    assert config.spec() == "noise:sigma=0.5" and "Cohen" in config.card()["paper"]
    key = training_config("lenet5", "mnist", epochs=5, defense=parse_defense("noise:sigma=0.25"))
    assert key["defense"] == "noise:sigma=0.25"
    with pytest.raises(GibbonInputError, match="sigma"):
        noise_objective(0.0)
    with pytest.raises(GibbonInputError, match="options"):
        parse_defense("noise:eps=0.3")


def test_noise_training_makes_the_model_accurate_under_noise():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    natural, noisy = _mlp(), _mlp()
    zoo.fit(natural, train, epochs=20, batch_size=100, lr=3e-3, progress=False)
    parse_defense("noise:sigma=0.35").fit(noisy, train, epochs=20, batch_size=100, lr=3e-3, progress=False)
    x = test.x.repeat(5, 1, 1, 1)
    x_noisy = x + 0.35 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        acc = {name: float((m(x_noisy).argmax(1) == test.y.repeat(5)).float().mean()) for name, m in
               (("natural", natural), ("noisy", noisy))}
    # measured (300 test digits x 5 draws of N(0, 0.35^2) noise): natural 75.8%, noise-trained 83.8%
    assert acc["noisy"] >= 0.78 and acc["noisy"] >= acc["natural"] + 0.06, acc
