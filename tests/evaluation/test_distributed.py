"""Sharded evaluations (gibbon.evaluation.shards / distributed): the per-sample numbers of one process,
resume from per-shard files, and the Ray path on a local Ray with 2 CPUs (`gibbon run --ray`, killed
with SIGKILL mid-run and resumed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from gibbon.core.checks import GibbonInputError
from gibbon.evaluation import LocalExecutor, RayExecutor, evaluate, evaluate_many
from gibbon.evaluation.shards import ShardStore, plan_shards

# a random start (seeded per batch), a minimal attack (run once, scored per eps) and a plain one
ATTACKS = ["fgsm", "pgd:steps=10,step_size=0.02,random_start=true", "deepfool"]
EPS = [0.05, 0.1]


def _reference(model, data, **kw):
    return evaluate(model, data, ATTACKS, EPS, batch_size=40, progress=False, **kw)


@pytest.mark.parametrize("cascade", [False, True])
@pytest.mark.parametrize("batches_per_shard", [1, 3])
def test_local_shards_equal_one_process(linear_digits, cascade, batches_per_shard):
    model, data = linear_digits
    direct = _reference(model, data, cascade=cascade)
    sharded = _reference(model, data, cascade=cascade, executor=LocalExecutor(), batches_per_shard=batches_per_shard)
    assert torch.equal(direct.per_sample, sharded.per_sample)
    assert [r.robust_accuracy for r in direct.results] == [r.robust_accuracy for r in sharded.results]
    assert [w.robust_accuracy for w in direct.worst_case] == [w.robust_accuracy for w in sharded.worst_case]
    assert direct.worst_case[-1].robust_accuracy < direct.clean_accuracy - 0.2  # the attacks did break samples
    minimal = [r for r in sharded.results if r.attack == "deepfool"]
    ref = [r for r in direct.results if r.attack == "deepfool"]
    assert [r.extra.get("distance") for r in minimal] == [r.extra.get("distance") for r in ref]
    assert sum(r.gradients for r in sharded.results) == sum(r.gradients for r in direct.results)


def test_shards_follow_batches_and_seeds(linear_digits):
    model, data = linear_digits
    clean = torch.ones(130, dtype=torch.bool)
    from gibbon.attacks import parse_attack

    chosen = [parse_attack("pgd"), parse_attack("deepfool")]
    shards = plan_shards(chosen, 2, clean, 40, cascade=False, batches_per_shard=2)
    # pgd: 2 eps x ceil(4 batches / 2); deepfool once: its single run covers every eps
    assert [s.key for s in shards] == ["a0-e0-b0", "a0-e0-b2", "a0-e1-b0", "a0-e1-b2", "a1-eall-b0", "a1-eall-b2"]
    assert [len(s.indices) for s in shards[:2]] == [80, 50]
    assert plan_shards(chosen, 2, clean, 40, cascade=True)[1].key == "cascade-e1"


def test_interrupted_run_resumes_from_shard_files(linear_digits, tmp_path, monkeypatch):
    model, data = linear_digits
    direct = _reference(model, data)
    checkpoint = tmp_path / "eval.json"
    real_save, saved = ShardStore.save, []

    def killed(self, shard, result):  # the kill: right after the third shard is on disk
        real_save(self, shard, result)
        saved.append(shard.key)
        if len(saved) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ShardStore, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        _reference(model, data, executor=LocalExecutor(), checkpoint=checkpoint)
    monkeypatch.setattr(ShardStore, "save", real_save)
    assert len(list((tmp_path / "eval.shards").glob("*.json"))) == 3
    resumed = _reference(model, data, executor=LocalExecutor(), checkpoint=checkpoint)
    stats = resumed.config["shards"]
    assert (stats["resumed"], stats["computed"]) == (3, stats["total"] - 3)
    assert torch.equal(resumed.per_sample, direct.per_sample)
    again = _reference(model, data, executor=LocalExecutor(), checkpoint=checkpoint)
    assert again.config["shards"]["computed"] == 0 and torch.equal(again.per_sample, direct.per_sample)
    # another seed changes the random starts: every saved shard is stale and recomputed, none mixed in
    other = _reference(model, data, executor=LocalExecutor(), checkpoint=checkpoint, seed=1)
    assert other.config["shards"]["resumed"] == 0


def test_a_torn_shard_file_is_recomputed(linear_digits, tmp_path):
    model, data = linear_digits
    checkpoint = tmp_path / "eval.json"
    first = _reference(model, data, executor=LocalExecutor(), checkpoint=checkpoint)
    victim = sorted((tmp_path / "eval.shards").glob("*.json"))[0]
    victim.write_text(victim.read_text()[:40])
    second = _reference(model, data, executor=LocalExecutor(), checkpoint=checkpoint)
    assert second.config["shards"]["computed"] == 1
    assert torch.equal(first.per_sample, second.per_sample)


def test_bad_settings_are_one_line_errors(linear_digits):
    model, data = linear_digits
    with pytest.raises(GibbonInputError, match="batches_per_shard"):
        _reference(model, data, executor=LocalExecutor(), batches_per_shard=0)
    with pytest.raises(GibbonInputError, match="workers"):
        RayExecutor(workers=0)
    with pytest.raises(GibbonInputError, match="pass one of them"):
        RayExecutor(address="auto", workers=2)
    from gibbon.oracles import Oracle

    limited = Oracle(model, max_total=10_000)
    with pytest.raises(GibbonInputError, match="shared query budget"):
        evaluate(limited, data, ["square:max_queries=10"], [0.1], progress=False, executor=LocalExecutor())


ray = pytest.importorskip("ray", reason="Ray is in the test extra (pip install -e '.[test]')")


def test_unreachable_clusters_are_one_line_errors(monkeypatch, capsys, tmp_path):
    from _helpers import run_cli

    with pytest.raises(GibbonInputError, match="no Ray cluster answers at 127.0.0.1:1"):
        RayExecutor(address="127.0.0.1:1").__enter__()  # refused at once, where Ray would retry for minutes
    with pytest.raises(GibbonInputError, match="HOST:PORT"):
        RayExecutor(address="nonsense").__enter__()
    monkeypatch.setenv("RAY_ADDRESS", "")
    code = run_cli(monkeypatch, "evaluate", "--model", "nothing.safetensors", "--dataset", "digits", "--attack",
                   "fgsm", "--eps", "0.1", "--address", "127.0.0.1:1", "--adaptive")
    assert code == 2 and "--adaptive runs in one process" in capsys.readouterr().err


def test_ray_equals_one_process_for_several_models(linear_digits):
    model, data = linear_digits
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        other[1].weight.copy_(model[1].weight * 0.5)
        other[1].bias.copy_(model[1].bias)
    jobs = [dict(model=m, data=data, attacks=ATTACKS, eps=EPS, batch_size=40, cascade=c)
            for m in (model, other) for c in (False, True)]
    with RayExecutor(workers=2) as executor:
        reports = evaluate_many(jobs, executor, progress=False)
    assert executor.workers == 2
    for job, report in zip(jobs, reports):
        direct = evaluate(**job, progress=False)
        assert torch.equal(report.per_sample, direct.per_sample)
        assert report.config["shards"]["executor"] == "ray"


def _experiment(tmp_path: Path, model_path: Path) -> Path:
    config = {"name": "ray-kill", "data": {"dataset": "digits", "n": 300},
              "models": [{"name": f"m{i}", "path": str(model_path)} for i in range(2)],
              "attacks": ["fgsm", "pgd:steps=200", "deepfool"], "eps": EPS, "batch_size": 30,
              "output": str(tmp_path / "out")}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _gibbon(*args):
    return [sys.executable, "-c", "from gibbon.cli import main; main()", *args]


def test_gibbon_run_on_ray_killed_and_resumed(tmp_path):
    """SIGKILL the driver once 12 shards are on disk; the rerun loads every one of them, computes only
    the rest, and gives the numbers of the run without Ray."""
    from _helpers import fit_full_batch

    from gibbon import data as gdata, zoo

    train = gdata.load("digits", "train")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = fit_full_batch(zoo.build("mlp-200-200", train), train.x, train.y)
    model_path = zoo.save(net, tmp_path / "m.safetensors", dataset=train)
    experiment = _experiment(tmp_path, model_path)
    shards = tmp_path / "out" / "checkpoints"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(_gibbon("run", str(experiment), "--ray", "--workers", "2"), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None and len(list(shards.glob("*.shards/*.json"))) < 12:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p: p.stat().st_mtime_ns for p in shards.glob("*.shards/*.json")}
    assert len(before) >= 12
    done = subprocess.run(_gibbon("run", str(experiment), "--workers", "2"), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    stats = [m["shards"] for m in summary["models"].values()]
    assert sum(s["resumed"] for s in stats) == len(before)  # every finished shard was loaded ...
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # ... and none written again
    assert sum(s["resumed"] + s["computed"] for s in stats) == sum(s["total"] for s in stats)
    direct = evaluate(zoo.load(model_path), gdata.load("digits", "test", n=300), ["fgsm", "pgd:steps=200", "deepfool"],
                      EPS, batch_size=30, progress=False)
    want = {f"{r.attack}@{r.eps:g}": r.robust_accuracy for r in direct.results}
    assert all(m["robust_accuracy"] == want for m in summary["models"].values())
