import json
import platform
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.zoo import build, load, load_user_model, save
from gibbon.zoo.io import Normalized

CARD_FIELDS = {"architecture", "dataset", "input_shape", "num_classes", "classes", "bounds", "normalization",
               "wrappers", "seed", "epochs", "clean_test_accuracy", "versions"}


def _built(name, dataset="digits", seed=0, **kw):
    torch.manual_seed(seed)
    return build(name, dataset, **kw).eval()


@pytest.mark.parametrize("name", ["lenet5", "tramer-b", "maxout", "logistic-regression"])
def test_round_trip_identical_logits_and_card(tmp_path, name):
    k = 2 if name == "logistic-regression" else None
    model = _built(name, num_classes=k, **({"dropout": 0.5} if name == "maxout" else {}))
    path = save(model, tmp_path / "sub" / "model.safetensors",
                {"dataset": "digits", "classes": list("ab") if k else [str(i) for i in range(10)], "seed": 0,
                 "epochs": 3, "clean_test_accuracy": 0.97}, note="hello")
    assert path == tmp_path / "sub" / "model.safetensors" and path.exists()
    card = json.loads((tmp_path / "sub" / "model.json").read_text())
    assert CARD_FIELDS <= set(card)
    assert card["architecture"] == name and card["input_shape"] == [1, 8, 8] and card["num_classes"] == (k or 10)
    assert card["bounds"] == [0.0, 1.0] and card["normalization"] is None and card["wrappers"] == []
    assert card["epochs"] == 3 and card["clean_test_accuracy"] == 0.97 and card["note"] == "hello"
    assert set(card["versions"]) == {"gibbon", "torch", "numpy", "python"}
    assert card["versions"]["python"] == platform.python_version()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["model.json", "model.safetensors"]

    state = torch.get_rng_state()
    loaded = load(path)
    assert torch.equal(state, torch.get_rng_state())  # rebuilding does not move the caller's RNG
    assert not loaded.training and loaded.gibbon_card == card
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # the card path and the folder work too
    assert torch.equal(load(tmp_path / "sub" / "model.json")(x), loaded(x))
    assert torch.equal(load(tmp_path / "sub")(x), loaded(x))


def test_resave_of_a_loaded_model_keeps_its_card(tmp_path):
    save(_built("softmax-regression"), tmp_path / "a.safetensors", {"dataset": "digits", "seed": 4})
    again = save(load(tmp_path / "a.safetensors"), tmp_path / "b.safetensors", {"wrappers": [{"temperature": 2.0}]})
    card = load(again).gibbon_card
    assert card["dataset"] == "digits" and card["seed"] == 4 and card["wrappers"] == [{"temperature": 2.0}]
    assert card["weights"] == "b.safetensors"


def test_normalized_model_round_trip(tmp_path):
    model = Normalized(_built("wong-net", "cifar10"), mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3]).eval()
    save(model, tmp_path / "m.safetensors", {"dataset": "cifar10"})
    loaded = load(tmp_path / "m.safetensors")
    assert isinstance(loaded, Normalized)
    assert loaded.gibbon_card["normalization"] == {"mean": pytest.approx([0.5, 0.4, 0.3]),
                                                   "std": pytest.approx([0.2, 0.25, 0.3])}
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_load_errors(tmp_path):
    with pytest.raises(GibbonInputError, match="no model weights"):
        load(tmp_path / "missing.safetensors")
    save(_built("softmax-regression"), tmp_path / "m.safetensors", {})
    (tmp_path / "m.json").unlink()
    with pytest.raises(GibbonInputError, match="no model card.*load_user_model"):
        load(tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(json.dumps({"architecture": "vgg-1000", "input_shape": [1, 8, 8],
                                                 "num_classes": 10}))
    with pytest.raises(GibbonInputError, match="vgg-1000"):
        load(tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(json.dumps({"architecture": "mlp-200-200", "input_shape": [1, 8, 8],
                                                 "num_classes": 10}))
    with pytest.raises(GibbonInputError, match="do not fit"):
        load(tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(GibbonInputError, match="cannot read model card"):
        load(tmp_path / "m.safetensors")


def test_card_must_be_json(tmp_path):
    with pytest.raises(GibbonInputError, match="JSON"):
        save(_built("softmax-regression"), tmp_path / "m.safetensors", {"dataset": object()})
    assert not list(tmp_path.iterdir())


USER_MODULE = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))

def make():
    return Net()

def not_a_model():
    return 42

raise_on_import = False
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = "gibbon_zoo_test_usernet"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    (tmp_path / "gibbon_zoo_test_broken.py").write_text("import this_module_does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in (name, "gibbon_zoo_test_broken"):
        sys.modules.pop(mod, None)


def test_load_user_model(tmp_path, user_module):
    torch.manual_seed(0)
    ref = nn.Linear(64, 3)
    save_file({"fc.weight": ref.weight.detach().clone(), "fc.bias": ref.bias.detach().clone()},
              str(tmp_path / "w.safetensors"))
    model = load_user_model(f"{user_module}:make", weights=tmp_path / "w.safetensors")
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x.flatten(1)))
    assert not model.training and model.gibbon_card == {"architecture": None, "factory": f"{user_module}:make"}
    # a class works as the factory, and a card can be given
    model = load_user_model(f"{user_module}:Net", weights=tmp_path / "w.safetensors", card={"dataset": "digits"})
    assert model.gibbon_card["dataset"] == "digits"

    # saved through gibbon.zoo.save with the factory in the card, load() finds it again once trusted
    save(model, tmp_path / "u.safetensors", {"factory": f"{user_module}:make", "input_shape": [1, 8, 8]})
    with torch.no_grad():
        assert torch.equal(load(tmp_path / "u.safetensors", trust_code=True)(x), ref(x.flatten(1)))


def test_load_user_model_errors(tmp_path, user_module):
    for bad in ["no_colon_here", "a.b:", ":make", "pkg:fn:extra", "bad-name:make", ""]:
        with pytest.raises(GibbonInputError, match="package.module:factory"):
            load_user_model(bad)
    with pytest.raises(GibbonInputError, match="cannot import module 'gibbon_zoo_test_nope'"):
        load_user_model("gibbon_zoo_test_nope:make")
    with pytest.raises(GibbonInputError, match="this_module_does_not_exist_anywhere"):
        load_user_model("gibbon_zoo_test_broken:make")
    with pytest.raises(GibbonInputError, match="no attribute 'nothing'"):
        load_user_model(f"{user_module}:nothing")
    with pytest.raises(GibbonInputError, match="not a torch.nn.Module"):
        load_user_model(f"{user_module}:not_a_model")
    with pytest.raises(GibbonInputError, match="no weights file"):
        load_user_model(f"{user_module}:make", weights=tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(GibbonInputError, match="safetensors"):
        load_user_model(f"{user_module}:make", weights=tmp_path / "junk.safetensors")
    save_file({"fc.weight": torch.zeros(3, 64)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(GibbonInputError, match="do not fit"):
        load_user_model(f"{user_module}:make", weights=tmp_path / "partial.safetensors")


def test_save_fills_card_from_a_dataset(tmp_path, digits):
    train, _ = digits
    model = _built("mlp-200-200", train)
    save(model, tmp_path / "m.safetensors", {"seed": 2, "epochs": 1}, dataset=train)
    card = load(tmp_path / "m.safetensors").gibbon_card
    assert card["dataset"] == "digits" and card["classes"] == list(train.classes)
    assert card["bounds"] == [0.0, 1.0] and card["input_shape"] == [1, 8, 8] and card["num_classes"] == 10
    assert card["data_source"] == train.source and card["seed"] == 2
    save(model, tmp_path / "n.safetensors", dataset="digits")
    assert load(tmp_path / "n.safetensors").gibbon_card["dataset"] == "digits"
