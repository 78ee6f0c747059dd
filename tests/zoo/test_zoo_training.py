import dataclasses

import pytest
import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError
from gibbon.zoo import FitResult, accuracy, build, fit
from gibbon.zoo.training import CHECKPOINT_NAME, make_schedule



def _model(arch, data, seed=0):
    torch.manual_seed(seed)
    return build(arch, data)


def _subset(ds, n):
    return dataclasses.replace(ds, x=ds.x[:n], y=ds.y[:n])


@pytest.mark.parametrize("arch, lr, epochs", [("softmax-regression", 1e-2, 8), ("mlp-200-200", 3e-3, 5)])
def test_fit_learns_digits(digits, arch, lr, epochs):
    train, val = digits
    model = _model(arch, train)
    before = accuracy(model, val)
    result = fit(model, train, epochs=epochs, batch_size=64, lr=lr, val=val, progress=False)
    assert isinstance(result, FitResult)
    assert result.val_accuracy >= 0.90 > before + 0.3
    assert result.val_accuracy == pytest.approx(accuracy(model, val))
    assert [h["epoch"] for h in result.history] == list(range(1, epochs + 1))
    for h in result.history:
        assert set(h) >= {"epoch", "train_loss", "train_accuracy", "val_accuracy", "seconds"}
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["train_accuracy"] > 0.9
    assert not model.training


def test_sgd_and_schedules_train(digits):
    train, val = digits
    model = _model("softmax-regression", train)
    result = fit(model, train, epochs=4, batch_size=64, optimizer="sgd", lr=0.2, schedule="cyclic",
                 val=val, progress=False)
    assert result.val_accuracy >= 0.85
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cyclic ends at 0
    result = fit(_model("softmax-regression", train), train, epochs=2, lr=0.01,
                 schedule=lambda t: 0.01 / (1 + t), progress=False)
    assert result.history[-1]["lr"] == pytest.approx(0.01 / 3)


def test_make_schedule_shapes():
    cyc = make_schedule("cyclic", 0.2, 10)
    assert cyc(0) == 0 and cyc(4) == pytest.approx(0.2) and cyc(10) == pytest.approx(0)
    assert cyc(2) == pytest.approx(0.1) and cyc(7) == pytest.approx(0.1)  # peak at 2/5 (Wong et al.)
    step = make_schedule("step", 1.0, 8)
    assert [step(t) for t in (0.5, 4.5, 6.5)] == pytest.approx([1.0, 0.1, 0.01])
    assert make_schedule(None, 0.3, 5)(4.2) == make_schedule("constant", 0.3, 5)(1) == 0.3
    with pytest.raises(GibbonInputError, match="unknown schedule"):
        make_schedule("cosine-ish", 0.1, 3)


def test_custom_objective_is_used(digits):
    train, _ = digits
    model = _model("mlp-200-200", train)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def zero_objective(m, x, y):
        calls.append(len(y))
        return 0.0 * F.cross_entropy(m(x), y)

    result = fit(model, train, epochs=2, batch_size=100, objective=zero_objective, progress=False)
    assert calls == [100] * 28  # 14 batches x 2 epochs, every sample seen
    assert all(torch.equal(start[k], v) for k, v in model.state_dict().items())
    assert result.history[0]["train_accuracy"] is None  # scalar objective: no logits to score
    assert result.history[0]["train_loss"] == 0.0


def test_objective_must_return_a_scalar(digits):
    train, _ = digits
    with pytest.raises(GibbonInputError, match="scalar"):
        fit(_model("softmax-regression", train), train, objective=lambda m, x, y: m(x), progress=False)


def test_fit_leaves_global_rng_alone(digits):
    train, _ = digits
    model = _model("tramer-d", train)  # dropout draws from the global RNG inside fit
    state = torch.get_rng_state()
    fit(model, _subset(train, 200), epochs=1, progress=False)
    assert torch.equal(state, torch.get_rng_state())


def test_fit_is_seeded(digits):
    train, _ = digits
    small = _subset(train, 300)
    runs = []
    for seed in (0, 0, 1):
        model = _model("tramer-d", small)
        fit(model, small, epochs=1, batch_size=32, seed=seed, progress=False)
        runs.append(model.state_dict())
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(runs[0], runs[1]) and not same(runs[0], runs[2])


def _equal_states(a, b):
    return all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "sgd-nesterov"])
def test_resume_after_kill_equals_uninterrupted_run(digits, tmp_path, optimizer):
    train, val = digits
    small, lr = _subset(train, 300), (1e-3 if optimizer == "adam" else 0.05)
    kw = dict(batch_size=32, optimizer=optimizer, lr=lr, val=val, seed=3, progress=False)

    full = _model("tramer-d", small)  # dropout: the RNG state must be restored too
    ref = fit(full, small, epochs=3, **kw)

    class Killed(Exception):
        pass

    def kill_after_first(epoch, entry):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        fit(_model("tramer-d", small), small, epochs=3, checkpoint_dir=tmp_path, callback=kill_after_first, **kw)
    assert (tmp_path / CHECKPOINT_NAME).exists()
    assert not [p for p in tmp_path.iterdir() if p.name != CHECKPOINT_NAME]  # no temp files left

    resumed_model = _model("tramer-d", small, seed=99)  # any init: the checkpoint overrides it
    resumed = fit(resumed_model, small, epochs=3, checkpoint_dir=tmp_path, **kw)
    assert resumed.resumed_from == 1
    assert _equal_states(full.state_dict(), resumed_model.state_dict())
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(ref.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"]) and a["val_accuracy"] == b["val_accuracy"]
    assert not resumed_model.training

    # asking again for a finished run trains nothing and returns the stored weights
    again_model = _model("tramer-d", small, seed=5)
    again = fit(again_model, small, epochs=3, checkpoint_dir=tmp_path, **kw)
    assert again.resumed_from == 3 and len(again.history) == 3
    assert _equal_states(full.state_dict(), again_model.state_dict())
    assert again.val_accuracy == ref.val_accuracy


def test_extend_one_epoch_run_to_two(digits, tmp_path):
    train, _ = digits
    small = _subset(train, 256)
    kw = dict(batch_size=64, seed=0, progress=False)
    straight = _model("mlp-200-200", small)
    fit(straight, small, epochs=2, **kw)
    model = _model("mlp-200-200", small)
    fit(model, small, epochs=1, checkpoint_dir=tmp_path, **kw)
    result = fit(model, small, epochs=2, checkpoint_dir=tmp_path, **kw)
    assert result.resumed_from == 1 and len(result.history) == 2
    assert _equal_states(straight.state_dict(), model.state_dict())


def test_checkpoint_of_another_run_is_refused(digits, tmp_path):
    train, _ = digits
    small = _subset(train, 128)
    fit(_model("softmax-regression", small), small, epochs=1, lr=1e-3, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(GibbonInputError, match="different training run"):
        fit(_model("softmax-regression", small), small, epochs=2, lr=1e-2, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(GibbonInputError, match="different training run"):
        fit(_model("mlp-200-200", small), small, epochs=2, lr=1e-3, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(GibbonInputError, match="already holds 1 epochs"):
        fit(_model("softmax-regression", small), small, epochs=0, lr=1e-3, checkpoint_dir=tmp_path, progress=False)


def test_sgd_nesterov_is_nesterov_momentum():
    from gibbon.zoo.training import make_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]
    plain, nesterov = make_optimizer("sgd", params, 0.1, 0.0), make_optimizer("sgd-nesterov", params, 0.1, 0.0)
    assert not plain.defaults["nesterov"] and nesterov.defaults["nesterov"]
    assert nesterov.defaults["momentum"] == plain.defaults["momentum"] == 0.9


def test_bad_arguments(digits):
    train, _ = digits
    model = _model("softmax-regression", train)
    with pytest.raises(GibbonInputError, match="optimizer"):
        fit(model, train, optimizer="rmsprop", progress=False)
    with pytest.raises(GibbonInputError, match="batch_size"):
        fit(model, train, batch_size=0, progress=False)
    with pytest.raises(GibbonInputError, match="empty"):
        fit(model, _subset(train, 0), progress=False)


def test_progress_bar_runs(digits):
    train, _ = digits
    result = fit(_model("softmax-regression", train), _subset(train, 200), epochs=1, progress=True)
    assert len(result.history) == 1


def test_accuracy_restores_mode(digits):
    train, val = digits
    model = _model("tramer-d", train)
    model.train()
    acc = accuracy(model, val, batch_size=50)
    assert 0.0 <= acc <= 1.0 and model.training


def _bn_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(4, momentum=0.3),
                               torch.nn.ReLU(), torch.nn.Linear(4, 2), torch.nn.BatchNorm1d(2))


def test_recalibrate_batch_norm_gives_the_population_statistics():
    from gibbon.zoo import recalibrate_batch_norm

    net = _bn_net()
    x = torch.randn(1000, 3) * 2.0 + 5.0
    net.train()
    net(torch.randn(64, 3))  # running stats now follow a batch far from x
    net.eval()
    assert recalibrate_batch_norm(net, x, batch_size=100) == 2
    bn = net[2]
    with torch.no_grad():
        h = net[0](x)  # dropout stayed in eval mode: the statistics are those of the test-time network
    assert torch.allclose(bn.running_mean, h.mean(0), atol=1e-5)
    # the plain average of 10 batch variances (unbiased), not an exponential average
    batch_vars = torch.stack([h[i:i + 100].var(0, unbiased=True) for i in range(0, 1000, 100)])
    assert torch.allclose(bn.running_var, batch_vars.mean(0), rtol=1e-4)
    assert bn.momentum == 0.3 and net[5].momentum == 0.1  # put back
    assert not net.training and not any(m.training for m in net.modules())


def test_recalibrate_batch_norm_keeps_weights_and_modes():
    from gibbon.zoo import recalibrate_batch_norm

    net = _bn_net().train()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    recalibrate_batch_norm(net, torch.randn(301, 3), batch_size=100)  # a last batch of 1 is skipped
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items() if k in weights)
    assert all(m.training for m in net.modules())  # train mode as it was
    assert recalibrate_batch_norm(torch.nn.Linear(3, 2), torch.randn(10, 3)) == 0  # nothing to do
    with pytest.raises(GibbonInputError, match="at least 2"):
        recalibrate_batch_norm(net, torch.randn(1, 3))
