import dataclasses
import json
import types

import pytest
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.zoo import build, list_cached, load, trained
from gibbon.zoo.cache import cache_key, cache_root, training_config


class FakeTrain:
    """A train_fn that builds an untrained model and counts its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, checkpoint_dir, progress):
        self.calls.append(config)
        torch.manual_seed(config["seed"])
        return build(config["arch"], config["dataset"]), {"clean_test_accuracy": 0.5}


def test_trains_once_then_reuses(tmp_path):
    fake = FakeTrain()
    path = trained("mlp-200-200", "digits", epochs=2, seed=1, cache_dir=tmp_path, train_fn=fake, progress=False)
    assert path.name == "model.safetensors" and path.exists() and path.with_suffix(".json").exists()
    assert path.parent.parent == tmp_path and path.parent.name.startswith("mlp-200-200-digits-")
    mtime = path.stat().st_mtime_ns
    again = trained("mlp-200-200", "digits", epochs=2, seed=1, cache_dir=tmp_path, train_fn=fake, progress=False)
    assert again == path and len(fake.calls) == 1 and path.stat().st_mtime_ns == mtime

    model = load(path)
    card = model.gibbon_card
    assert card["architecture"] == "mlp-200-200" and card["dataset"] == "digits"
    assert card["seed"] == 1 and card["epochs"] == 2 and card["clean_test_accuracy"] == 0.5
    assert card["training"] == fake.calls[0] and card["cache_key"] in path.parent.name

    # any config change is another entry
    other = trained("mlp-200-200", "digits", epochs=3, seed=1, cache_dir=tmp_path, train_fn=fake, progress=False)
    assert other != path and len(fake.calls) == 2
    cards = list_cached(tmp_path)
    assert [c["path"] for c in cards] == sorted([str(path), str(other)])
    assert {c["epochs"] for c in cards} == {2, 3}


def test_cache_key_covers_the_config():
    base = dict(epochs=2, seed=0, batch_size=128, lr=1e-3, optimizer="adam", schedule=None, n_train=None)
    key = cache_key(training_config("lenet5", "mnist", **base))
    assert len(key) == 16 and key == cache_key(training_config("lenet5", "mnist", **base))
    for change in [dict(epochs=3), dict(seed=1), dict(batch_size=64), dict(lr=1e-2), dict(optimizer="sgd"),
                   dict(schedule="cyclic"), dict(n_train=1000)]:
        assert cache_key(training_config("lenet5", "mnist", **{**base, **change})) != key
    assert cache_key(training_config("lenet5", "digits", **base)) != key
    assert cache_key(training_config("wong-net", "mnist", **base)) != key
    assert training_config("lenet5", "mnist", **base)["gibbon"].count(".") == 1  # major.minor
    with pytest.raises(GibbonInputError, match="unknown architecture"):
        training_config("nope", "mnist", **base)
    with pytest.raises(GibbonInputError, match="named schedule"):
        training_config("lenet5", "mnist", **{**base, "schedule": lambda t: 0.1})


def test_cache_location(tmp_path, monkeypatch):
    monkeypatch.setenv("GIBBON_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    fake = FakeTrain()
    path = trained("softmax-regression", "digits", epochs=1, train_fn=fake, progress=False)
    assert path.parent.parent == tmp_path / "env"
    assert [c["architecture"] for c in list_cached()] == ["softmax-regression"]
    monkeypatch.delenv("GIBBON_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "gibbon" / "models"
    assert list_cached(tmp_path / "nothing-here") == []


@pytest.fixture
def fake_data(digits, monkeypatch):
    """A stand-in gibbon.data module serving the sklearn digits splits."""
    train, val = digits
    calls = []

    def load(name, split, n=None, seed=None, classes=None):
        calls.append((name, split, n, classes))
        ds = {"train": train, "val": val, "test": val}[split]
        ds = dataclasses.replace(ds, split=split)
        if classes is not None:
            keep = torch.isin(ds.y, torch.tensor(classes))
            y = torch.searchsorted(torch.tensor(sorted(classes)), ds.y[keep])
            ds = dataclasses.replace(ds, x=ds.x[keep], y=y, classes=tuple(str(c) for c in sorted(classes)))
        return ds if n is None else dataclasses.replace(ds, x=ds.x[:n], y=ds.y[:n])

    monkeypatch.setitem(__import__("sys").modules, "gibbon.data", types.SimpleNamespace(load=load))
    return calls


def test_default_training_on_gibbon_data(tmp_path, fake_data, monkeypatch):
    import gibbon.zoo.cache as cache_mod

    path = trained("softmax-regression", "digits", epochs=3, lr=1e-2, batch_size=64, n_train=1000,
                   cache_dir=tmp_path, progress=False)
    assert fake_data == [("digits", "train", 1000, None), ("digits", "val", None, None),
                         ("digits", "test", None, None)]
    assert not (path.parent / "checkpoints").exists()  # removed once the model is saved
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["clean_test_accuracy"] > 0.85 and card["val_accuracy"] == card["clean_test_accuracy"]
    assert card["classes"] == [str(i) for i in range(10)] and card["input_shape"] == [1, 8, 8]
    assert len(card["history"]) == 3 and card["training"]["n_train"] == 1000

    # a killed training resumes from the checkpoint kept in the cache entry
    class Killed(Exception):
        pass

    results = []
    real_fit = cache_mod.fit

    def killed_fit(model, train, **kw):
        def kill(epoch, entry):
            raise Killed
        return real_fit(model, train, callback=kill, **kw)

    def spy_fit(model, train, **kw):
        results.append(real_fit(model, train, **kw))
        return results[-1]

    monkeypatch.setattr(cache_mod, "fit", killed_fit)
    with pytest.raises(Killed):
        trained("mlp-200-200", "digits", epochs=2, n_train=300, cache_dir=tmp_path, progress=False)
    entry = next(tmp_path.glob("mlp-200-200-digits-*"))
    assert (entry / "checkpoints" / "checkpoint.pt").exists() and not (entry / "model.safetensors").exists()
    monkeypatch.setattr(cache_mod, "fit", spy_fit)
    path = trained("mlp-200-200", "digits", epochs=2, n_train=300, cache_dir=tmp_path, progress=False)
    assert path.parent == entry and results[0].resumed_from == 1 and len(results[0].history) == 2


def test_classes_are_passed_to_the_data_loader(tmp_path, fake_data):
    with pytest.raises(GibbonInputError, match=r"classes=\[3, 7\]"):
        trained("logistic-regression", "digits", epochs=1, cache_dir=tmp_path, progress=False)
    fake_data.clear()
    path = trained("logistic-regression", "digits", epochs=5, lr=3e-2, batch_size=32, classes=[3, 7],
                   cache_dir=tmp_path, progress=False)
    assert fake_data[0] == ("digits", "train", None, [3, 7])
    model = load(path)
    assert model.gibbon_card["classes"] == ["3", "7"] and model.gibbon_card["num_classes"] == 2
    assert model.gibbon_card["clean_test_accuracy"] > 0.9


def test_cache_keys_are_pinned_and_defenses_come_parsed():
    # Keys measured before the zoo stopped parsing defense specs itself (issue 27): cached models stay valid.
    # "gibbon" is pinned to 0.1 so that a version bump (which is meant to retrain) does not fail this test.
    def key(**kw):
        return cache_key({**training_config(**kw), "gibbon": "0.1"})

    assert key(arch="madry-cnn", dataset_name="mnist", epochs=2) == "24b38a780ce8aae8"
    noise = types.SimpleNamespace(spec=lambda: "noise:sigma=0.25")  # any object with spec(), as parse_defense gives
    assert key(arch="lenet5", dataset_name="mnist", epochs=5, defense=noise) == "d0f19ff089ccac2d"
    with pytest.raises(GibbonInputError, match="parse_defense"):
        training_config("lenet5", "mnist", epochs=5, defense="noise:sigma=0.25")
