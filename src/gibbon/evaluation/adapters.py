"""Any model as ``x -> logits``: the view :func:`gibbon.evaluation.diagnose.diagnose` attacks.

Real models return tuples (``(logits, features)``), dicts or HuggingFace-style output objects
(``out["logits"]``, ``out.logits``), probabilities instead of logits, NaN on some inputs, or
raise on some inputs. :class:`Scores` turns each of these into a plain ``(B, K)`` tensor and a
record of what it saw, so an evaluation reports a finding instead of a traceback:

* a tuple / list: its first tensor; a mapping or an object with ``.logits``: that entry
  (``logits``, else ``scores``, else the only tensor);
* probabilities (rows >= 0 summing to 1): their logarithm once :meth:`Scores.use_log` is on,
  since the cross-entropy of a softmax of probabilities has a vanishing gradient;
* a batch that raises: retried one sample at a time; the samples that still raise get NaN
  scores (never counted as correct, see :func:`correct`) and the error is recorded;
* NaN gradients: replaced by 0 on the way back to the input, so one bad sample cannot turn a
  whole batch's attack step into NaN.

The adapter never changes a finite answer of the model: whatever an attack finds through it is
scored on the same outputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.oracles.base import QueryBudgetExceeded

PROBABILITY_TOLERANCE = 1e-3
KEYS = ("logits", "scores", "output", "outputs")


def scores_of(output) -> torch.Tensor:
    """The score tensor inside a model's output (tensor, tuple, dict or ``.logits`` object).

    Example:
        >>> scores_of({"logits": torch.ones(2, 3), "hidden": torch.zeros(2, 5)}).shape
        torch.Size([2, 3])
        >>> scores_of((torch.zeros(4, 10), torch.zeros(4, 7))).shape
        torch.Size([4, 10])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
        raise GibbonInputError(f"the model returned a {type(output).__name__} with no tensor in it; "
                               "return the logits (B, classes) first")
    if isinstance(output, Mapping) or hasattr(output, "logits"):
        get = output.get if isinstance(output, Mapping) else (lambda k: getattr(output, k, None))
        for key in KEYS:
            value = get(key)
            if isinstance(value, torch.Tensor):
                return value
        tensors = [v for v in (output.values() if isinstance(output, Mapping) else ()) if isinstance(v, torch.Tensor)]
        if len(tensors) == 1:
            return tensors[0]
        raise GibbonInputError(f"the model returned a mapping without a 'logits' entry (keys: {list(output)[:8]}); "
                               "return the logits under the key 'logits'")
    raise GibbonInputError(f"the model returned a {type(output).__name__}, not a tensor of scores (B, classes)")


def looks_like_probabilities(scores: torch.Tensor) -> bool:
    """Rows of non-negative numbers that sum to 1: a softmax at the end of the model.

    Example:
        >>> looks_like_probabilities(torch.softmax(torch.randn(4, 3), dim=1))
        True
        >>> looks_like_probabilities(torch.randn(4, 3))
        False
    """
    finite = scores[torch.isfinite(scores).all(dim=1)] if scores.ndim == 2 else scores[:0]
    if finite.numel() == 0:
        return False
    sums = finite.sum(dim=1)
    return bool((finite >= -1e-6).all() and ((sums - 1).abs() <= PROBABILITY_TOLERANCE).all())


def correct(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``bool[B]``: predicted ``y`` with finite scores (a NaN answer is never a correct one)."""
    return (scores.argmax(dim=1) == y) & torch.isfinite(scores).all(dim=1)


class _ZeroNanGradient(torch.autograd.Function):
    """Identity forward; the incoming gradient with NaN / inf replaced by 0."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


class Scores(nn.Module):
    """``model`` seen as ``x -> (B, K)`` scores, recording what it had to adapt.

    Attributes:
        output_kind: ``"tensor"``, ``"tuple"``, ``"mapping"`` (set by the first call).
        log_of_probabilities: take ``log`` of the outputs (set by :meth:`use_log`).
        errors: the first line of each distinct exception the model raised (at most 5 kept).
        failed_samples: samples the model raised on, summed over calls.

    Example:
        >>> class Tupled(torch.nn.Module):
        ...     def forward(self, x):
        ...         return (x.flatten(1)[:, :3], "aux")
        >>> Scores(Tupled())(torch.ones(2, 1, 2, 2)).shape
        torch.Size([2, 3])
    """

    def __init__(self, model):
        super().__init__()
        if not callable(model):
            raise GibbonInputError(f"the model must be callable x -> scores, got {type(model).__name__}")
        if isinstance(model, nn.Module):
            self.model = model
        else:  # an oracle or a plain function: kept, not registered as a submodule
            object.__setattr__(self, "_callable", model)
        self.output_kind: str | None = None
        self.log_of_probabilities = False
        self.errors: list[str] = []
        self.failed_samples = 0
        self.classes: int | None = None

    @property
    def inner(self):
        return self.model if "model" in self._modules else self._callable

    def use_log(self, on: bool = True) -> "Scores":
        self.log_of_probabilities = bool(on)
        return self

    def _once(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.output_kind is None:
            self.output_kind = ("tensor" if isinstance(out, torch.Tensor) else
                                "tuple" if isinstance(out, (tuple, list)) else "mapping")
        scores = scores_of(out)
        if scores.ndim != 2 or scores.shape[0] != x.shape[0]:
            raise GibbonInputError(f"the model returned shape {tuple(scores.shape)} for a batch of {x.shape[0]}; "
                                   "it must return one row of class scores per input (B, classes)")
        if not scores.is_floating_point():
            scores = scores.float()
        self.classes = int(scores.shape[1])
        return scores.clamp_min(1e-30).log() if self.log_of_probabilities else scores

    def _record(self, err: Exception) -> None:
        line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if line not in self.errors and len(self.errors) < 5:
            self.errors.append(line)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            x = _ZeroNanGradient.apply(x)
        try:
            return self._once(x)
        except (GibbonInputError, QueryBudgetExceeded):  # the caller's to handle: a wrong shape, a spent budget
            raise
        except Exception as err:  # noqa: BLE001 - a model failing on some inputs is a finding, not a crash
            self._record(err)
        rows = []
        for i in range(x.shape[0]):  # find the samples it fails on
            try:
                rows.append(self._once(x[i:i + 1]))
            except (GibbonInputError, QueryBudgetExceeded):
                raise
            except Exception as err:  # noqa: BLE001
                self._record(err)
                self.failed_samples += 1
                rows.append(None)
        if all(r is None for r in rows):
            if self.classes is None:
                raise GibbonInputError(f"the model raised on every input ({self.errors[0]}); check that it accepts "
                                       f"inputs of shape {tuple(x.shape[1:])}")
        k = next(r.shape[1] for r in rows if r is not None) if any(r is not None for r in rows) else self.classes
        template = next((r for r in rows if r is not None), None)
        dtype = template.dtype if template is not None else x.dtype
        nan_row = torch.full((1, k), float("nan"), dtype=dtype, device=x.device)
        # the NaN rows stay connected to x with a zero gradient, so autograd.grad never sees an unused input
        tie = (x.reshape(x.shape[0], -1)[:, :1].sum() * 0).to(dtype) if x.requires_grad else 0.0
        return torch.cat([r if r is not None else nan_row + tie for r in rows])
