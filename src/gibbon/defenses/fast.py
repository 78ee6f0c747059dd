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

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from gibbon.core.checks import GibbonInputError
from gibbon.core.norms import LINF
from gibbon.defenses.registry import DefenseConfig, register

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


class CatastrophicOverfitting(Exception):
    """Raised by :func:`overfitting_guard` to end :func:`gibbon.zoo.fit` early."""


def overfitting_guard(model, probe, *, eps: float, history: list, states: list, drop: float = 0.2,
                      steps: int = 10, step_size: float | None = None):
    """Wong et al.'s guard against catastrophic overfitting (section 5.3) as a ``fit`` callback.

    After every epoch: PGD-``steps`` accuracy at ``eps`` on the fixed ``probe`` Dataset. The
    best epoch's weights are kept in ``states`` (one ``(epoch, state_dict)``); when an epoch
    falls more than ``drop`` below the best so far, :class:`CatastrophicOverfitting` is raised
    and the caller restores ``states[-1]``. Every epoch's entry, with
    ``probe_pgd_accuracy``, is appended to ``history``.
    """
    from gibbon.attacks import PGD

    attack = PGD(steps=steps) if step_size is None else PGD(steps=steps, step_size=step_size)

    def callback(epoch: int, entry: dict) -> None:
        was_training = model.training
        model.eval()
        try:
            x_adv = attack(model, probe.x, probe.y, eps=eps, bounds=probe.bounds,
                           generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                robust = float((model(x_adv).argmax(1) == probe.y).float().mean())
        finally:
            model.train(was_training)
        history.append({**entry, "probe_pgd_accuracy": robust})
        best = max((h["probe_pgd_accuracy"] for h in history[:-1]), default=-1.0)
        if robust >= best:
            states.clear()
            states.append((epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}))
        elif robust < best - drop:
            raise CatastrophicOverfitting(f"epoch {epoch}: probe PGD-{steps} accuracy {robust:.3f} < best {best:.3f} - {drop}")
    return callback


@register("fast")
@dataclass(frozen=True)
class FastTraining(DefenseConfig):
    """``--defense fast:eps=0.3,step_size=0.375`` (Wong et al. 2020), with early stopping.

    ``early_stop``: after every epoch, PGD-10 accuracy on the first ``probe`` validation images
    (``fit``'s ``val``; without ``val`` the guard is off); training stops when it falls more
    than ``drop`` below the best epoch, whose weights are restored. The history entries get
    ``probe_pgd_accuracy``. Use Wong et al.'s ``cyclic`` schedule (``fit(schedule="cyclic")``).
    """

    paper = "Wong, Rice & Kolter 2020, arXiv:2001.03994"
    eps: float = 0.3
    step_size: float = 0.375
    early_stop: bool = True
    probe: int = 500
    drop: float = 0.2

    def objective(self, train):
        return fast_objective(self.eps, self.step_size, bounds=train.bounds)

    def fit(self, model, train, **fit_kwargs):
        from dataclasses import replace

        from gibbon.zoo.training import FitResult, fit

        val = fit_kwargs.get("val")
        if not self.early_stop or val is None:
            return fit(model, train, objective=self.objective(train), **fit_kwargs)
        history, states = [], []
        guard = overfitting_guard(model, replace(val, x=val.x[:self.probe], y=val.y[:self.probe]), eps=self.eps, history=history, states=states,
                                  drop=self.drop)
        user_callback = fit_kwargs.pop("callback", None)

        def callback(epoch, entry):
            guard(epoch, entry)
            if user_callback is not None:
                user_callback(epoch, entry)
        try:
            result = fit(model, train, objective=self.objective(train), callback=callback, **fit_kwargs)
            stopped = None
        except CatastrophicOverfitting as stop:
            result, stopped = FitResult(), str(stop)
        if states:  # restore the best probed epoch (empty only when a resumed run had no epoch left)
            model.load_state_dict(states[-1][1])
            model.eval()
        result.history = history or result.history
        result.val_accuracy = next((h["val_accuracy"] for h in history if states and h["epoch"] == states[-1][0]),
                                   result.val_accuracy)
        result.early_stopped = stopped
        result.kept_epoch = states[-1][0] if states else None
        return result
