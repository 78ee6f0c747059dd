"""`gibbon run experiment.yaml`: validated by pydantic (unknown keys name the nearest valid one), the same
numbers as `gibbon.evaluate` with the same settings, and a killed run that resumes without recomputing."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from _helpers import fit_full_batch, one_thread, run_cli  # noqa: F401  (one_thread: a module fixture)

from gibbon import data, zoo
from gibbon.core.checks import GibbonInputError
from gibbon.evaluation import evaluate
from gibbon.experiments import load_experiment, run_experiment


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    train = data.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = fit_full_batch(zoo.build("mlp-200-200", train), train.x, train.y)
    return zoo.save(net, tmp_path_factory.mktemp("m") / "mlp.safetensors", dataset=train)


def _config(model_path, out, **extra):
    return {"name": "digits", "data": {"dataset": "digits", "n": 60},
            "models": [{"name": "mlp", "path": str(model_path)}],
            "attacks": ["fgsm", "pgd:steps=10"], "eps": [0.05, 0.1], "batch_size": 30, "output": str(out), **extra}


def _write(tmp_path, config, name="experiment.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_matches_evaluate_and_writes_reports(monkeypatch, tmp_path, model_path):
    path = _write(tmp_path, _config(model_path, tmp_path / "out"))
    assert run_cli(monkeypatch, "run", str(path)) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    direct = evaluate(zoo.load(model_path), data.load("digits", "test", n=60), ["fgsm", "pgd:steps=10"], [0.05, 0.1],
                      batch_size=30, seed=0, progress=False)
    got = summary["models"]["mlp"]
    assert got["clean_accuracy"] == direct.clean_accuracy
    assert got["robust_accuracy"] == {f"{r.attack}@{r.eps:g}": r.robust_accuracy for r in direct.results}
    assert got["worst_case"]["0.1"] < got["clean_accuracy"] - 0.3  # the attacks did something
    assert (tmp_path / "out" / "mlp.json").exists() and (tmp_path / "out" / "checkpoints" / "mlp.json").exists()


class _Counting(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.rows = net, 0

    def forward(self, x):
        self.rows += len(x)
        return self.net(x)


def test_a_killed_run_resumes_without_recomputing(tmp_path, model_path, monkeypatch):
    """The first run is killed after its first (attack, eps) unit; the rerun finishes the rest, and a third
    run, with everything in the checkpoint, does almost no model work."""
    import gibbon.experiments.runner as runner

    experiment = load_experiment(_write(tmp_path, _config(model_path, tmp_path / "out")))
    models = []
    monkeypatch.setattr(runner, "load_model", lambda spec, device: models.append(_Counting(zoo.load(model_path)))
                        or models[-1])
    clean = run_experiment(load_experiment(_write(tmp_path, _config(model_path, tmp_path / "fresh"), "f.yaml")),
                           progress=False, echo=lambda *_: None)
    full_rows = models[-1].rows

    from gibbon.evaluation.checkpoint import Checkpoint

    real_save, saves = Checkpoint.save, []

    def killed(self):  # the kill: right after the first unit is on disk
        real_save(self)
        saves.append(1)
        if len(saves) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment, progress=False, echo=lambda *_: None)
    monkeypatch.setattr(Checkpoint, "save", real_save)
    resumed = run_experiment(experiment, progress=False, echo=lambda *_: None)
    assert resumed["models"] == clean["models"]  # the same numbers as the uninterrupted run
    assert models[-1].rows < full_rows  # the unit saved before the kill was not attacked again
    again = run_experiment(experiment, progress=False, echo=lambda *_: None)
    assert again["models"] == clean["models"]
    assert models[-1].rows <= full_rows // 5, (models[-1].rows, full_rows)  # measured: clean pass only


@pytest.mark.parametrize("change, message", [
    ({"atacks": ["pgd"]}, "unknown key 'atacks'; did you mean 'attacks'?"),
    ({"data": {"dataset": "digits", "nn": 5}}, "unknown key 'data.nn'; did you mean 'n'?"),
    ({"models": [{"name": "m", "zoo": {"arch": "lenet5", "epoch": 2}}]}, "did you mean 'epochs'?"),
    ({"models": [{"name": "m"}]}, "exactly one of 'zoo'"),
    ({"eps": "lots"}, "eps"),
    ({"norm": "l3"}, "norm"),
    ({"attacks": [], "suite": None}, "give 'attacks'"),
])
def test_bad_files_are_one_line_errors(monkeypatch, capsys, tmp_path, model_path, change, message):
    path = _write(tmp_path, {**_config(model_path, tmp_path / "out"), **change})
    with pytest.raises(GibbonInputError, match=None) as err:
        load_experiment(path)
    assert message in str(err.value)
    assert run_cli(monkeypatch, "run", str(path)) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_unparseable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [unclosed")
    with pytest.raises(GibbonInputError, match="not valid YAML"):
        load_experiment(bad)
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(GibbonInputError):  # safe_load builds no objects from the file
        load_experiment(tagged)
    with pytest.raises(GibbonInputError, match="does not exist"):
        load_experiment(tmp_path / "missing.yaml")


def test_the_example_file_is_the_main_job():
    from gibbon.reproductions._common import MAIN_ARCH, MAIN_ATTACKS, MAIN_EPOCHS, MAIN_EPS, MAIN_N

    experiment = load_experiment("examples/mnist.yaml")
    (model,) = experiment.models
    assert (model.zoo.arch, model.zoo.epochs, model.zoo.seed) == (MAIN_ARCH, MAIN_EPOCHS, 0)
    assert experiment.attacks == MAIN_ATTACKS and experiment.eps == MAIN_EPS and experiment.data.n == MAIN_N
