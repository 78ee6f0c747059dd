import torch
from torch import nn

from gibbon.evaluation import CountingModel


def test_counts_rows_and_gradient_rows_without_changing_outputs():
    model = nn.Linear(3, 2)
    counted = CountingModel(model)
    x = torch.rand(4, 3)
    assert torch.equal(counted(x), model(x))
    x_var = torch.rand(5, 3, requires_grad=True)
    out = counted(x_var)
    torch.autograd.grad(out.sum(), x_var)
    with torch.no_grad():
        counted(torch.rand(6, 3).requires_grad_(True))  # no graph: not a gradient
    assert (counted.forwards, counted.gradients) == (15, 5)
    counted.reset()
    assert (counted.forwards, counted.gradients) == (0, 0)


def test_state_dict_and_mode_pass_through():
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5))
    counted = CountingModel(model)
    counted.eval()
    assert not model[1].training
    assert set(counted.state_dict()) == {f"model.{k}" for k in model.state_dict()}
