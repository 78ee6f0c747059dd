"""Fast adversarial training: FGSM from a random start (Wong, Rice & Kolter 2020, "Fast is
better than free: Revisiting adversarial training", arXiv:2001.03994).

Threat model: white-box, L-infinity ball of radius ``eps`` inside the input box, untargeted.
Each training step (Wong et al., algorithm 3) draws ``delta ~ U(-eps, eps)``, takes one FGSM
step ``delta <- delta + step_size * sign(grad_delta CE(model(x + delta), y))`` (step size
``alpha = 1.25 eps`` by default), projects ``delta`` back into the ball and the box, and trains
on the cross-entropy at ``x + delta``. One extra forward/backward per batch: about as cheap as
FGSM training, as robust as PGD training (when it does not "catastrophically overfit").

MNIST recipe (Wong et al.'s public code, ``MNIST/train_mnist.py``): eps 0.3, step size 0.375,
uniform random start, batch 100, Adam, cyclic learning rate rising from 0 to 5e-3 at 2/5 of the
epochs and back to 0, 10 epochs, the 4x4-strided two-conv network (``zoo.build("wong-net",
"mnist")``). Reported (table 6 of the paper): 98.50% clean, 88.77% under PGD (50 steps, 10
restarts) at eps 0.3, and 82.93% under AutoAttack in Croce & Hein 2020 (arXiv:2003.01690).

The random start is *not* clipped to the box before the gradient is taken (as in their code;
only the final ``x + delta`` is). This detail decides whether MNIST training works. On MNIST
most pixels are 0, and clipping the start there leaves ``delta ~ U(0, eps)``: the 0.375 step
then always lands on ``+eps``, so the "random" FGSM is plain FGSM on the dark pixels and the
network overfits catastrophically (section 5.3). Measured here (``benchmarks/fast_at_start.py``:
gibbon's 50k train split, seed 0, PGD-40 step 0.01 on the first 500 test images): 14.2% with
the clipped start after epoch 3 against 68.6% without it, and 2.6% against 91.0% after epoch 10.
Check a fast-trained model with PGD / ``evaluate(..., suite="reliable")``, never with FGSM.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import LINF

#: The fit() settings used for the MNIST reproduction (``zoo.fit(model, train, **fit_kwargs)``).
MNIST_RECIPE = {
    "eps": 0.3,
    "step_size": 0.375,
    "fit": {"epochs": 10, "batch_size": 100, "optimizer": "adam", "lr": 5e-3, "schedule": "cyclic"},
}


def fast_objective(eps: float, step_size: float | None = None, bounds=(0.0, 1.0),
                   generator: torch.Generator | None = None, start_in_box: bool = False) -> Callable:
    """The "fast" (FGSM + random init) adversarial training objective for :func:`gibbon.zoo.fit`.

    Args:
        eps: L-infinity radius of the training perturbations (0.3 on MNIST).
        step_size: the FGSM step, Wong et al.'s alpha; default ``1.25 * eps`` (0.375 on MNIST).
        bounds: valid input box; ``x + delta`` is kept inside it.
        generator: randomness of the uniform start; default the global RNG (which
            :func:`gibbon.zoo.fit` seeds inside ``fork_rng``, so training stays reproducible).
        start_in_box: clip the random start ``x + delta`` into ``bounds`` before the gradient
            step. Off by default, as in Wong et al.'s code: the gradient is then taken at a
            point up to ``eps`` outside the box (the model only has to accept it), and turning
            it on makes MNIST training overfit catastrophically (see the module docstring).

    Returns:
        ``objective(model, x, y) -> loss``: the mean cross-entropy at ``x + delta``. The model's
        mode is left as it is (``fit`` trains in ``train()`` mode, like the paper); ``delta``'s
        gradient is taken with ``torch.autograd.grad`` w.r.t. ``delta`` only, so no
        ``param.grad`` is filled before the caller's own ``backward``.

    Shape:
        x: ``(B, ...)`` inside ``bounds``; y: ``(B,)`` class labels.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> objective = fast_objective(0.1, generator=torch.Generator().manual_seed(0))
        >>> loss = objective(model, torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1]))
        >>> loss.shape, loss.requires_grad
        (torch.Size([]), True)

    References:
        Wong, Rice & Kolter (2020), arXiv:2001.03994, algorithm 3 and section 5 (MNIST).
    """
    if not eps > 0:
        raise GibbonInputError(f"eps must be > 0, got {eps!r}; for clean training leave objective=None")
    step_size = 1.25 * eps if step_size is None else step_size
    if not step_size > 0:
        raise GibbonInputError(f"step_size must be > 0, got {step_size!r} (Wong et al. use 1.25 * eps)")
    low, high = float(bounds[0]), float(bounds[1])

    def objective(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        # algorithm 3, line 3: delta ~ U(-eps, eps); clipping it into the box here would make
        # it one-sided at saturated pixels (see the module docstring)
        delta = LINF.sample(x, eps, generator)
        if start_in_box:
            delta = (x + delta).clamp(low, high) - x
        delta.requires_grad_(True)
        with torch.enable_grad():
            attack_loss = F.cross_entropy(model(x + delta), y)
            (grad,) = torch.autograd.grad(attack_loss, delta)
        # lines 4-5: one signed step of size alpha, projected onto the ball, then into the box
        delta = (delta.detach() + step_size * grad.sign()).clamp(-eps, eps)
        x_adv = (x + delta).clamp(low, high)
        # line 6: the training loss at the perturbed input
        return F.cross_entropy(model(x_adv), y)

    clip = ", start_in_box=True" if start_in_box else ""
    objective.__qualname__ = f"fast_objective(eps={eps}, step_size={step_size}{clip})"
    return objective
