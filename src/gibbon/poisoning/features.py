"""Penultimate-layer representations, the space where poisons collide (Shafahi et al. 2018) and
where backdoor detectors look (Tran et al. 2018; Chen et al. 2018)."""

from __future__ import annotations

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.zoo.training import model_device


def last_linear(model: nn.Module) -> nn.Linear:
    """The model's output layer: the last ``nn.Linear`` in registration order (the zoo's layout)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise GibbonInputError(f"{type(model).__name__} has no nn.Linear layer to read features before; "
                               "pass a model whose logits come from a final linear layer")
    return linears[-1]


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the output layer for a batch ``x``, with the graph kept (differentiable in ``x``)."""
    captured = []
    handle = last_linear(model).register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1)


@torch.no_grad()
def penultimate_features(model: nn.Module, x: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """:func:`penultimate` for a whole set, in eval mode, batched, on the model's device; returns CPU
    float32 ``(N, D)``. The model's train/eval mode is restored."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        parts = [penultimate(model, x[i:i + batch_size].to(device)).float().cpu()
                 for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, last_linear(model).in_features)
