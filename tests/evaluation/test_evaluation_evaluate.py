import copy

import pytest
import torch
from _evaluation_helpers import (
    L0OnlyAttack, LineSearchAttack, NoiseAttack, NoOpAttack, OutOfBallAttack, Spy, StepAttack,
)
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.evaluation import Report, evaluate

EPS = [0.05, 0.1, 0.3]


def clean_correct(model, data):
    with torch.no_grad():
        return model(data.x).argmax(1) == data.y


def test_noop_keeps_clean_accuracy_and_fgsm_breaks_a_linear_model(linear_digits):
    model, data = linear_digits
    report = evaluate(model, data, [NoOpAttack(), StepAttack()], EPS, progress=False)
    assert report.clean_accuracy > 0.9, f"clean accuracy {report.clean_accuracy:.3f}"
    assert report.clean_accuracy == int(clean_correct(model, data).sum()) / len(data)
    for e in EPS:
        assert report.robust_accuracy("test-noop", e) == report.clean_accuracy
    fgsm = [report.robust_accuracy("test-step", e) for e in EPS]
    # measured on this model: about 70% at 0.05, 20% at 0.1, 0% at 0.3
    assert fgsm[0] < report.clean_accuracy - 0.1, fgsm
    assert fgsm[-1] < 0.05, fgsm
    assert fgsm == sorted(fgsm, reverse=True), fgsm


def test_result_fields_and_costs(linear_digits):
    model, data = linear_digits
    report = evaluate(model, data, [NoOpAttack(), StepAttack()], [0.1], progress=False)
    attacked = int(clean_correct(model, data).sum())
    noop, step = report.results
    assert (noop.attack, noop.eps, noop.norm, noop.partial) == ("test-noop", 0.1, "linf", False)
    assert step.params == {"loss": "ce"}
    assert (noop.forwards, noop.gradients) == (0, 0)
    assert (step.forwards, step.gradients) == (attacked, attacked)  # one gradient per attacked sample
    assert step.extra["attacked"] == attacked
    assert step.seconds >= 0
    low, high = step.interval
    assert low <= step.robust_accuracy <= high
    assert report.n == len(data) and report.dataset["name"] == "digits"
    assert set(report.versions) == {"gibbon", "torch", "numpy", "python"}
    assert report.model["class"] == "Sequential"
    assert report.per_sample.shape == (2, 1, len(data))


def test_misclassified_clean_samples_are_never_attacked(linear_digits):
    model, data = linear_digits
    spy = Spy()
    report = evaluate(model, data, [spy], [0.1, 0.2], batch_size=64, progress=False)
    correct = clean_correct(model, data)
    seen = torch.cat([c["x"] for c in spy.calls if c["eps"] == 0.1])
    labels = torch.cat([c["y"] for c in spy.calls if c["eps"] == 0.1])
    assert len(seen) == int(correct.sum()) < len(data)
    with torch.no_grad():
        assert (model(seen).argmax(1) == labels).all()
    assert max(len(c["x"]) for c in spy.calls) == 64
    assert {c["bounds"] for c in spy.calls} == {(0.0, 1.0)} and {c["norm"] for c in spy.calls} == {"linf"}
    assert not report.per_sample[0, :, ~correct].any()


def test_generator_seed_scheme_and_reproducibility(linear_digits):
    model, data = linear_digits
    spy = Spy()
    evaluate(model, data, [NoOpAttack(), spy], [0.1], batch_size=100, seed=7, progress=False)
    assert [c["seed"] for c in spy.calls] == [7 + 1000 * b + 1 for b in range(len(spy.calls))]
    first = evaluate(model, data, [NoiseAttack()], [0.2, 0.4], seed=3, progress=False)
    second = evaluate(model, data, [NoiseAttack()], [0.2, 0.4], seed=3, progress=False)
    assert torch.equal(first.per_sample, second.per_sample)


def test_worst_case_is_the_per_sample_and(linear_digits):
    model, data = linear_digits
    attacks = [StepAttack(), StepAttack(loss="margin"), NoOpAttack()]
    report = evaluate(model, data, attacks, EPS, progress=False)
    correct = clean_correct(model, data)
    for j, e in enumerate(EPS):
        worst = report.worst_case_accuracy(e)
        per_attack = [report.robust_accuracy(a, e) for a in range(len(attacks))]
        assert worst <= min(per_attack)
        expected = int((correct & report.per_sample[:, j].all(0)).sum()) / len(data)
        assert worst == expected
    # at eps 0.1 the two losses break different samples: the worst case is strictly lower
    ce, margin = report.per_sample[0, 1], report.per_sample[1, 1]
    assert (ce & ~margin).any() and (margin & ~ce).any()
    assert report.worst_case_accuracy(EPS[1]) < min(report.robust_accuracy(a, EPS[1]) for a in range(2))


def test_cascade_gives_the_same_worst_case_and_marks_partial(linear_digits):
    model, data = linear_digits
    attacks = [StepAttack(), StepAttack(loss="margin")]
    full = evaluate(model, data, attacks, EPS, progress=False)
    spy = Spy()
    cascade = evaluate(model, data, attacks + [spy], EPS, cascade=True, progress=False)
    for e in EPS:
        assert cascade.worst_case_accuracy(e) == full.worst_case_accuracy(e)
    assert [r.partial for r in cascade.results if r.eps == EPS[0]] == [False, True, True]
    # the last attack only sees what the first two left: the worst-case survivors
    for j, e in enumerate(EPS):
        survivors = int((full.per_sample[:, j].all(0)).sum())
        assert sum(len(c["x"]) for c in spy.calls if c["eps"] == e) == survivors
    # cascade numbers are cumulative: never above the first attack's own
    for e in EPS:
        assert cascade.robust_accuracy(1, e) <= cascade.robust_accuracy(0, e)


def test_minimal_attack_runs_once_and_is_scored_at_each_eps(linear_digits, monkeypatch):
    model, data = linear_digits
    calls = []
    original = LineSearchAttack.__call__

    def counting_call(self, *args, **kwargs):
        calls.append(kwargs["eps"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LineSearchAttack, "__call__", counting_call)
    report = evaluate(model, data, [LineSearchAttack()], EPS, batch_size=500, progress=False)
    assert calls == [max(EPS)]

    # independent scoring: distances of the attack's own outputs
    correct = clean_correct(model, data)
    x, y = data.x[correct], data.y[correct]
    x_adv = original(LineSearchAttack(), model, x, y, eps=0.0, norm="linf", bounds=(0.0, 1.0))
    with torch.no_grad():
        fooled = model(x_adv).argmax(1) != y
    dist = (x_adv - x).flatten(1).abs().amax(1)
    for e in EPS:
        robust = int((~(fooled & (dist <= e + 1e-6))).sum())
        assert report.robust_accuracy("test-linesearch", e) == robust / len(data), e
    result = report.results[0]
    assert result.extra["run_once"] is True
    stats = result.extra["distance"]
    assert stats["count"] == int(fooled.sum())
    assert stats["median"] == pytest.approx(dist[fooled].double().median().item(), abs=0.026)  # grid step 0.025
    assert stats["q25"] <= stats["median"] <= stats["q75"] <= stats["q90"]
    assert stats["mean"] == pytest.approx(dist[fooled].double().mean().item(), rel=1e-6)
    # same numbers as the budget attack along the same direction on this grid's points
    budget = evaluate(model, data, [StepAttack()], [0.1, 0.3], progress=False)
    assert report.robust_accuracy("test-linesearch", 0.3) <= budget.robust_accuracy("test-step", 0.3)


def test_minimal_attack_in_cascade(linear_digits):
    model, data = linear_digits
    plain = evaluate(model, data, [NoOpAttack(), LineSearchAttack()], EPS, progress=False)
    cascade = evaluate(model, data, [NoOpAttack(), LineSearchAttack()], EPS, cascade=True, progress=False)
    for e in EPS:
        assert cascade.worst_case_accuracy(e) == plain.worst_case_accuracy(e)
    assert cascade.results[-1].extra["run_once"] is False


def test_out_of_ball_outputs_are_not_counted(linear_digits):
    model, data = linear_digits
    report = evaluate(model, data, [OutOfBallAttack()], [0.05], progress=False)
    assert report.robust_accuracy("test-outofball", 0.05) == report.clean_accuracy
    assert any("outside the threat model" in w for w in report.warnings), report.warnings


def test_targeted_evaluation(linear_digits):
    model, data = linear_digits
    spy = Spy()
    report = evaluate(model, data, [spy, StepAttack()], [0.1], target="least-likely", progress=False)
    with torch.no_grad():
        logits = model(data.x)
    correct = logits.argmax(1) == data.y
    sent = torch.cat([c["target"] for c in spy.calls])
    assert torch.equal(sent, logits.argmin(1)[correct])
    untargeted = evaluate(model, data, [StepAttack()], [0.1], progress=False)
    # reaching the least-likely class is harder than any misclassification
    assert report.robust_accuracy("test-step", 0.1) > untargeted.robust_accuracy("test-step", 0.1)


def test_tensor_pair_and_string_specs(linear_digits):
    from gibbon.attacks.registry import ATTACKS

    model, data = linear_digits
    name = "test-eval-registered-noop"
    ATTACKS[name] = type("RegisteredNoOp", (NoOpAttack,), {"name": name, "__module__": __name__})
    try:
        report = evaluate(model, (data.x, data.y), [name], 0.1, progress=False)
    finally:
        del ATTACKS[name]
    assert report.results[0].attack == name
    assert report.dataset["name"] == "tensors"


@pytest.mark.parametrize("eps", [-0.1, [0.1, -1.0], float("nan")])
def test_bad_eps(linear_digits, eps):
    model, data = linear_digits
    with pytest.raises(GibbonInputError, match="eps"):
        evaluate(model, data, [NoOpAttack()], eps, progress=False)


def test_norm_conflict(linear_digits):
    model, data = linear_digits
    with pytest.raises(GibbonInputError, match="attack test-jsma is defined for l0 only; pass --norm l0"):
        evaluate(model, data, [L0OnlyAttack()], 0.1, norm="linf", progress=False)
    with pytest.raises(GibbonInputError, match="unknown norm"):
        evaluate(model, data, [NoOpAttack()], 0.1, norm="l3", progress=False)


def test_inputs_outside_bounds(linear_digits):
    model, data = linear_digits
    with pytest.raises(GibbonInputError, match="bounds"):
        evaluate(model, (data.x * 2 - 1, data.y), [NoOpAttack()], 0.1, progress=False)


def test_training_flags_restored_per_module(linear_digits):
    model, data = linear_digits
    model = nn.Sequential(copy.deepcopy(model), nn.Dropout(0.0))
    model.train()
    model[1].eval()  # a mixed state must come back exactly
    seen = []

    def probe(m, x, y, **kw):
        seen.append(m.model.training or m.model[1].training)
        return x

    evaluate(model, data, [probe], 0.1, progress=False)
    assert seen and not any(seen)
    assert model.training and model[0].training and not model[1].training


def test_model_left_untouched(linear_digits):
    model, data = linear_digits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(model, data, [StepAttack()], 0.1, progress=False)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_progress_bar_runs(linear_digits, capsys):
    model, data = linear_digits
    report = evaluate(model, data, [StepAttack(), LineSearchAttack()], [0.1, 0.2], progress=True)
    assert isinstance(report, Report)


def test_minimal_attacks_without_eps_are_scored_unbounded(linear_digits, tmp_path):
    model, data = linear_digits
    calls = []
    spy_minimal = LineSearchAttack()

    def minimal(model, x, y, **kw):
        calls.append(kw["eps"])
        return spy_minimal(model, x, y, **kw)

    minimal.minimal, minimal.name = True, "test-minimal-fn"
    report = evaluate(model, data, [minimal], [], progress=False)
    assert calls == [None, None]  # no budget to pass: eps=None, one call per batch
    assert [r.eps for r in report.results] == [float("inf")]
    bounded = evaluate(model, data, [LineSearchAttack()], [1.0], progress=False)
    assert report.robust_accuracy("test-minimal-fn", float("inf")) == bounded.robust_accuracy("test-linesearch", 1.0)
    path = tmp_path / "r.json"
    report.to_json(path)
    assert '"eps": null' in path.read_text() and "Infinity" not in path.read_text()
    assert Report.from_json(path) == report
    with pytest.raises(GibbonInputError, match="at least one eps"):
        evaluate(model, data, [StepAttack(), LineSearchAttack()], [], progress=False)
