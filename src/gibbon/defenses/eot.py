"""Expectation over Transformation, EOT (Athalye, Engstrom, Ilyas & Kwok 2018, "Synthesizing
Robust Adversarial Examples", arXiv:1707.07397, section 2; used against randomized defenses in
Athalye, Carlini & Wagner 2018, arXiv:1802.00420, section 4.3).

Threat model: white-box, any norm and attack. A randomized defense answers with a different
draw of its randomness at every call, so one gradient is one noisy sample. :class:`EOT` wraps
the randomized model into its average over ``samples`` draws; the gradient of that average is
the average of the draws' gradients, which is what Athalye et al. ascend. Attacks do not know
about it (principle 4): ``PGD(...)(EOT(defended, samples=10), x, y, eps=0.3)``.

What is averaged: by default the *probabilities*, returned as ``log(mean_t softmax(f(t(x))))``,
the log-probabilities of the randomized classifier's expected vote. One overconfident draw
cannot then dominate the average (as it can with logits, whose scale is arbitrary), and the
cross-entropy of the average, ``-log E_t[p_y]``, is small only when the true class keeps a
high probability under most draws, i.e. when the defense is actually robust. ``average="logits"``
gives the mean of the logits instead (a margin loss of the mean is then the mean margin loss).

The wrapped model must draw its randomness per sample (as
:class:`~gibbon.defenses.transforms.RandomResizePad` does): the ``samples`` copies of a batch
are concatenated into one forward pass (or chunks of ``batch_size`` rows); for a model that
draws once per call, pass ``batch_size=len(x)`` so that every copy is its own call.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gibbon.core.checks import GibbonInputError

AVERAGES = ("probabilities", "logits")


class EOT(nn.Module):
    """The average of a randomized model over ``samples`` draws.

    Args:
        model: the randomized model ``x -> logits`` (e.g. an ``InputTransformed`` defense).
        samples: number of draws ``k`` per input (Athalye et al. use tens to hundreds).
        average: ``"probabilities"`` (log of the mean softmax, default) or ``"logits"``.
        batch_size: most rows per forward pass of ``model`` (default: all ``k * B`` at once);
            ``"copy"``: one call per copy of the batch (for a model that draws once per call).

    Shape:
        ``(B, ...) -> (B, K)``: log-probabilities (or mean logits) of the ``k`` draws.

    Example:
        >>> from gibbon.defenses.transforms import InputTransformed, RandomResizePad
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> eot = EOT(InputTransformed(RandomResizePad(2), net), samples=8)
        >>> totals = eot(torch.rand(5, 1, 8, 8)).detach().exp().sum(dim=1)  # a probability vector per input
        >>> bool(torch.allclose(totals, torch.ones(5), atol=1e-5))
        True

    References:
        Athalye, Engstrom, Ilyas & Kwok (2018), arXiv:1707.07397, equation 2.
    """

    def __init__(self, model, samples: int = 10, *, average: str = "probabilities", batch_size: int | None = None):
        super().__init__()
        if not callable(model):
            raise GibbonInputError("EOT needs a model: a callable x -> logits")
        if isinstance(samples, bool) or int(samples) != samples or samples < 1:
            raise GibbonInputError(f"samples must be a whole number >= 1, got {samples!r}")
        if average not in AVERAGES:
            raise GibbonInputError(f"average must be one of {', '.join(AVERAGES)}, got {average!r}")
        if batch_size not in (None, "copy") and (isinstance(batch_size, (str, bool)) or int(batch_size) != batch_size
                                                 or batch_size < 1):
            raise GibbonInputError(f"batch_size must be a whole number >= 1, 'copy' or None, got {batch_size!r}")
        self.model, self.samples, self.average = model, int(samples), average
        self.batch_size = batch_size if batch_size in (None, "copy") else int(batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[0], self.samples
        rows = x.repeat(k, *([1] * (x.ndim - 1)))  # copy j of sample i is row j * B + i
        step = {None: rows.shape[0], "copy": b}.get(self.batch_size, self.batch_size)
        outs = torch.cat([self.model(rows[i:i + step]) for i in range(0, rows.shape[0], step)])
        outs = outs.reshape(k, b, *outs.shape[1:])
        if self.average == "logits":
            return outs.mean(dim=0)
        # log(mean_j softmax_j) computed stably as logsumexp_j(log_softmax_j) - log k
        return torch.logsumexp(outs.log_softmax(dim=-1), dim=0) - math.log(k)

    def extra_repr(self) -> str:
        return f"samples={self.samples}, average={self.average!r}, batch_size={self.batch_size}"
