import json

import pytest
from _evaluation_helpers import LineSearchAttack, StepAttack
from rich.console import Console
from rich.table import Table

from gibbon.evaluation import Report, Result, WorstCase, evaluate

TOP_LEVEL = {"schema_version", "started", "finished", "versions", "model", "dataset", "config", "n", "seed",
             "clean_accuracy", "clean_interval", "results", "worst_case", "warnings", "per_sample"}
RESULT_KEYS = {"attack", "params", "eps", "norm", "robust_accuracy", "interval", "seconds", "gradients",
               "forwards", "partial", "extra"}


@pytest.fixture(scope="module")
def report(linear_digits):
    model, data = linear_digits
    return evaluate(model, data, [StepAttack(), StepAttack(loss="margin"), LineSearchAttack()], [0.05, 0.1],
                    progress=False)


def test_json_round_trip(report, tmp_path):
    path = tmp_path / "sub" / "report.json"
    report.to_json(path)
    loaded = Report.from_json(path)
    assert loaded == report
    assert loaded.results == report.results and loaded.worst_case == report.worst_case
    assert loaded.per_sample.equal(report.per_sample) and loaded.clean_correct.equal(report.clean_correct)
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temporary file left behind


def test_json_schema(report, tmp_path):
    path = tmp_path / "report.json"
    report.to_json(path)
    raw = json.loads(path.read_text())
    assert set(raw) == TOP_LEVEL
    assert raw["schema_version"] == 1
    assert all(set(r) == RESULT_KEYS for r in raw["results"])
    assert all(set(w) == {"eps", "norm", "robust_accuracy", "interval"} for w in raw["worst_case"])
    accuracies = [raw["clean_accuracy"]] + [r["robust_accuracy"] for r in raw["results"] + raw["worst_case"]]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    assert raw["results"][4]["extra"]["distance"]["count"] > 0
    robust = raw["per_sample"]["robust"]
    assert len(robust) == 3 and len(robust[0]) == 2 and len(robust[0][0]) == raw["n"]
    assert set("".join(robust[0])) <= {"0", "1"}


def test_json_without_per_sample(report, tmp_path):
    path = tmp_path / "small.json"
    report.to_json(path, per_sample=False)
    assert json.loads(path.read_text())["per_sample"] is None
    loaded = Report.from_json(path)
    assert loaded.per_sample is None and loaded.results == report.results


def test_unknown_schema_version(report):
    data = report.to_dict()
    data["schema_version"] = 99
    with pytest.raises(ValueError, match="schema_version"):
        Report.from_dict(data)


def test_lookups(report):
    assert report.robust_accuracy(2, 0.1) == report.robust_accuracy("test-linesearch", 0.1)
    assert report.robust_accuracy("worst case", 0.1) == report.worst_case_accuracy(0.1)
    with pytest.raises(KeyError, match="2 results"):
        report.robust_accuracy("test-step", 0.1)  # two configs share the name: use the index
    with pytest.raises(KeyError, match="no result"):
        report.robust_accuracy("test-linesearch", 0.5)


def test_table(report):
    table = report.table()
    assert isinstance(table, Table)
    assert len(table.columns) == 3 and len(table.rows) == 4
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "worst case" in text and "test-step(loss=margin)" in text and "eps=0.05" in text
    acc, (low, high) = report.results[0].robust_accuracy, report.results[0].interval
    assert f"{100 * acc:.1f}% [{100 * low:.1f}, {100 * high:.1f}]" in text


def test_dataclasses_construct_by_name():
    result = Result(attack="x", params={}, eps=0.1, norm="linf", robust_accuracy=0.5, interval=(0.4, 0.6))
    worst = WorstCase(eps=0.1, norm="linf", robust_accuracy=0.5, interval=(0.4, 0.6))
    report = Report(n=10, results=[result], worst_case=[worst])
    assert Report.from_dict(report.to_dict()) == report
    assert report.robust_accuracy("x", 0.1) == 0.5
