import json

import pytest
from _evaluation_helpers import LineSearchAttack, NoOpAttack, StepAttack

from gibbon.evaluation import evaluate

EPS = [0.05, 0.1, 0.3]


def comparable(report) -> dict:
    """The report without wall-clock fields (timestamps, seconds)."""
    d = report.to_dict()
    del d["started"], d["finished"]
    for r in d["results"]:
        del r["seconds"]
    return d


class Interrupted(Exception):
    pass


def run_interrupted(model, data, attacks, path, monkeypatch, **kw):
    """Run until StepAttack is called at eps 0.3, where the 'process is killed'."""
    original = StepAttack.__call__

    def crash(self, model, x, y, **kwargs):
        if kwargs["eps"] == 0.3:
            raise Interrupted
        return original(self, model, x, y, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(StepAttack, "__call__", crash)
        with pytest.raises(Interrupted):
            evaluate(model, data, attacks, EPS, checkpoint=path, progress=False, **kw)


def count_calls(monkeypatch, cls):
    calls = []
    original = cls.__call__

    def counted(self, *args, **kwargs):
        calls.append(kwargs["eps"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", counted)
    return calls


@pytest.mark.parametrize("cascade", [False, True])
def test_resume_equals_an_uninterrupted_run(linear_digits, tmp_path, monkeypatch, cascade):
    model, data = linear_digits
    attacks = [LineSearchAttack(), NoOpAttack(), StepAttack()] if not cascade else [NoOpAttack(), StepAttack(), LineSearchAttack()]
    reference = evaluate(model, data, attacks, EPS, cascade=cascade, progress=False)
    path = tmp_path / "ckpt.json"
    run_interrupted(model, data, attacks, path, monkeypatch, cascade=cascade)
    saved = json.loads(path.read_text())
    assert saved["format"] == "gibbon-evaluation-checkpoint"
    done = set(saved["units"])
    assert done and len(done) < len(attacks) * len(EPS)

    calls = count_calls(monkeypatch, StepAttack)
    minimal_calls = count_calls(monkeypatch, LineSearchAttack)
    resumed = evaluate(model, data, attacks, EPS, cascade=cascade, checkpoint=path, progress=False)
    assert comparable(resumed) == comparable(reference)
    if cascade:  # eps 0.05 and 0.1 were finished: only eps 0.3 is attacked again
        assert set(calls) == {0.3} and set(minimal_calls) <= {0.3}  # nothing left to attack after StepAttack
    else:  # the minimal attack ran once before the crash and is not run again
        assert set(calls) == {0.3} and minimal_calls == []

    # a finished checkpoint gives the same report without attacking anything
    calls.clear()
    again = evaluate(model, data, attacks, EPS, cascade=cascade, checkpoint=path, progress=False)
    assert calls == [] and comparable(again) == comparable(reference)


def test_different_configuration_starts_over(linear_digits, tmp_path, monkeypatch):
    model, data = linear_digits
    path = tmp_path / "ckpt.json"
    evaluate(model, data, [StepAttack()], EPS, checkpoint=path, progress=False)
    calls = count_calls(monkeypatch, StepAttack)
    report = evaluate(model, data, [StepAttack()], [0.05, 0.2], checkpoint=path, progress=False)
    assert sorted(set(calls)) == [0.05, 0.2]  # nothing reused, not even the shared eps 0.05
    assert any("different evaluation" in w and "eps" in w for w in report.warnings), report.warnings
    fresh = evaluate(model, data, [StepAttack()], [0.05, 0.2], progress=False)
    assert report.results[0].robust_accuracy == fresh.results[0].robust_accuracy
    assert json.loads(path.read_text())["fingerprint"]["eps"] == [0.05, 0.2]

    calls.clear()
    other = evaluate(model, data, [StepAttack(loss="margin")], [0.05, 0.2], checkpoint=path, progress=False)
    assert len(calls) > 0 and any("attacks" in w for w in other.warnings)


def test_unreadable_checkpoint_starts_over(linear_digits, tmp_path):
    model, data = linear_digits
    path = tmp_path / "ckpt.json"
    path.write_text("{not json")
    report = evaluate(model, data, [NoOpAttack()], EPS, checkpoint=path, progress=False)
    assert any("could not be read" in w for w in report.warnings)
    assert json.loads(path.read_text())["units"]
