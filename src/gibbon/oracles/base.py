"""The black-box view of a model: scores (or labels) for inputs, never a gradient, every query counted.

An :class:`Oracle` wraps any callable ``x -> scores`` (a torch model, later a scikit-learn, ONNX
or HTTP adapter). One query is one input row. Queries are counted in total and per sample: a
call may say which sample each row belongs to (``idx``), so an attack that queries only its
unsolved samples, or many candidates of one sample at once, keeps exact per-sample counts. An
optional per-sample budget ``max_queries`` is enforced *before* the model runs; attacks ask
``oracle.remaining(idx)`` (or ``oracle.affordable(idx, k)``) and stop cleanly instead of hitting
:class:`QueryBudgetExceeded`.

A budget can also be shared by all samples: ``max_total`` rows in all, or what the model itself
reports through a ``queries_left()`` method (a remote API's per-token budget, see
:class:`~gibbon.oracles.HttpOracle`). ``remaining(idx)`` then splits what is left over the samples
asked about (each gets an equal share, capped by its own budget), so an attack that checks it
before every call never asks for more than is left; ``affordable(idx, k)`` picks the samples, in
order, that can pay ``k`` queries each from the shared total.

The output can be hardened to face each API style: raw ``"scores"``, top-1 ``"label"`` only, or
scores ``"rounded"`` to ``decimals`` places (a common defence against score-based attacks).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from gibbon.core.checks import GibbonInputError

UNLIMITED = torch.iinfo(torch.int64).max  # what remaining() reports without a budget
OUTPUTS = ("scores", "label", "rounded")


class GradientRefusedError(RuntimeError):
    """An oracle was given an input that requires grad: black boxes never give gradients."""


class QueryBudgetExceeded(RuntimeError):
    """A call would take some sample past its per-sample query budget, or the oracle past its shared one."""


def share_total(left: torch.Tensor, total: int) -> torch.Tensor:
    """Split ``total`` queries over samples whose own budgets are ``left``: water-filling.

    Every sample gets ``min(left_i, level)`` for the largest level the total pays for, and the
    rest of the total goes one query each to the first samples still below their own budget. The
    result never exceeds ``left`` and sums to at most ``total``.

    Example:
        >>> share_total(torch.tensor([1, 10, 10, 10]), 20).tolist()
        [1, 7, 6, 6]
    """
    left = left.clamp(min=0)
    capped = left.clamp(max=max(int(total), 0))
    if int(capped.sum()) <= total:
        return capped
    low, high = 0, int(total)  # the largest level with sum(min(left, level)) <= total
    while low < high:
        mid = (low + high + 1) // 2
        if int(capped.clamp(max=mid).sum()) <= total:
            low = mid
        else:
            high = mid - 1
    share = capped.clamp(max=low)
    extra = total - int(share.sum())  # fewer than the samples still below their budget
    below = (capped > low).nonzero().squeeze(1)[:extra]
    share[below] += 1
    return share


def reported_budget(model) -> int | None:
    """The shared query budget ``model`` reports as left: an Oracle's ``total_remaining()``, or
    a ``queries_left()`` method's (a remote API's, or a wrapper passing one on); None without one."""
    for name in ("total_remaining", "queries_left"):
        reported = getattr(model, name, None)
        if callable(reported):
            return reported()
    return None


def pass_refusal(model) -> None:
    """Tell ``model`` of a shared-budget refusal if it keeps count of them (``note_refusal()``)."""
    note = getattr(model, "note_refusal", None)
    if callable(note):
        note()


class Oracle:
    """Query-counting, gradient-refusing black-box view of ``model``.

    Args:
        model: callable ``x -> scores [B, K]`` (logits or probabilities), or another Oracle (then
            this one is a view with its own counts and budget, and the inner one still counts
            and enforces its own). A model with a ``queries_left()`` method (``None``: no limit)
            adds that shared budget, as :class:`~gibbon.oracles.HttpOracle` does with the server's.
        max_queries: per-sample budget (None: unlimited).
        max_total: budget over all samples together (None: unlimited).
        n: number of samples tracked (None: grows with the largest ``idx`` seen).
        output: ``"scores"`` (as the model gives), ``"label"`` (top-1 class ``[B]`` only) or
            ``"rounded"`` (scores rounded to ``decimals`` places).
        decimals: rounding for ``output="rounded"``.

    Example:
        >>> oracle = Oracle(torch.nn.Linear(4, 3), max_queries=2, n=2)
        >>> oracle(torch.zeros(3, 4), idx=torch.tensor([0, 0, 1])).shape
        torch.Size([3, 3])
        >>> oracle.total, oracle.queries.tolist(), oracle.remaining().tolist()
        (3, [2, 1], [0, 1])
        >>> shared = Oracle(torch.nn.Linear(4, 3), max_total=5)
        >>> shared.remaining(torch.arange(3)).tolist(), shared.affordable(torch.arange(3), 2).tolist()
        ([2, 2, 1], [True, True, False])
    """

    def __init__(self, model, *, max_queries: int | None = None, max_total: int | None = None, n: int | None = None,
                 output: str = "scores", decimals: int = 2):
        if output not in OUTPUTS:
            raise GibbonInputError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        for name, value in (("max_queries", max_queries), ("max_total", max_total)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
                raise GibbonInputError(f"{name} must be a whole number >= 0 or None, got {value!r}")
        self.model, self.output, self.decimals = model, output, int(decimals)
        self.max_queries = None if max_queries is None else int(max_queries)
        self.max_total = None if max_total is None else int(max_total)
        self.queries = torch.zeros(0 if n is None else int(n), dtype=torch.int64)  # per sample, on CPU
        self.fixed_n = n is not None
        self.total = 0
        self.held = 0  # queries of the shared total kept back by holding()
        # times a shared total refused a call, left out of affordable() samples that their own
        # budgets could pay for, or granted less than asked: here, or in an oracle that queries
        # through this one (note_refusal)
        self.refusals = 0

    def _rows(self, x: torch.Tensor, idx) -> torch.Tensor:
        if idx is None:
            return torch.arange(x.shape[0])
        idx = torch.as_tensor(idx).detach().reshape(-1).cpu().long()
        if idx.shape[0] != x.shape[0]:
            raise GibbonInputError(f"idx must give one sample index per row of x ({x.shape[0]}), got {idx.shape[0]}")
        if idx.numel() and int(idx.min()) < 0:
            raise GibbonInputError("idx must hold sample indices >= 0")
        return idx

    def _grow(self, size: int) -> None:
        if size > self.queries.shape[0]:
            if self.fixed_n:
                raise GibbonInputError(
                    f"sample index {size - 1} out of range for an oracle tracking n={len(self.queries)}")
            self.queries = torch.cat([self.queries, torch.zeros(size - len(self.queries), dtype=torch.int64)])

    def _own_left(self, idx: torch.Tensor) -> torch.Tensor:
        """Per-sample budgets left, this oracle's and the inner ones', before any shared total."""
        self._grow(int(idx.max()) + 1 if idx.numel() else 0)
        left = (torch.full((len(idx),), UNLIMITED, dtype=torch.int64) if self.max_queries is None
                else self.max_queries - self.queries[idx])
        if isinstance(self.model, Oracle):
            left = torch.minimum(left, self.model._own_left(idx))
        return left

    def total_remaining(self) -> int:
        """Queries left over all samples together (``UNLIMITED`` without a shared budget): the
        least of ``max_total``'s rest, an inner oracle's and the model's ``queries_left()``."""
        left = UNLIMITED if self.max_total is None else self.max_total - self.total
        if (reported := reported_budget(self.model)) is not None:
            left = min(left, int(reported))
        if left >= UNLIMITED:
            return UNLIMITED
        return max(left - self.held, 0)

    @contextmanager
    def holding(self, k: int):
        """Keep ``k`` queries of the shared total back while inside: ``total_remaining()`` and
        ``remaining()`` report that much less, and calls cannot spend it. The evaluation holds
        back one query per sample so that an attack's result can still be checked after it.

        Example:
            >>> oracle = Oracle(torch.nn.Linear(4, 3), max_total=5)
            >>> with oracle.holding(3):
            ...     oracle.total_remaining()
            2
            >>> oracle.total_remaining()
            5
        """
        k = max(int(k), 0)
        self.held += k
        try:
            yield self
        finally:
            self.held -= k

    def note_refusal(self) -> None:
        """Count a shared-total refusal here and in the budgets this oracle queries through.

        An attack wraps the model it is given in an oracle of its own (per-sample ``max_queries``),
        often through wrappers such as the evaluation's counting model; the refusal travels
        inwards to the oracle that owns the shared total, which is the one ``evaluate`` watches."""
        self.refusals += 1
        pass_refusal(self.model)

    def remaining(self, idx=None) -> torch.Tensor:
        """Queries left per sample ``[len(idx)]`` (all tracked samples when None); ``UNLIMITED`` without a budget.

        Under a shared total the total is split over ``idx`` (:func:`share_total`), so the values
        sum to at most what is left: ask about the samples you are about to query."""
        idx = torch.arange(len(self.queries)) if idx is None else torch.as_tensor(idx).reshape(-1).cpu().long()
        left, total = self._own_left(idx), self.total_remaining()
        return left if total >= UNLIMITED else share_total(left, total)

    def grant(self, idx, k: int) -> torch.Tensor:
        """Queries each sample of ``idx`` may spend now, at most ``k`` each: the shared total is
        water-filled over what each sample wants (``min(k, own budget)``). Where the total gives a
        sample less than that, the cut is counted (:meth:`note_refusal`), as for :meth:`affordable`.

        Example:
            >>> oracle = Oracle(torch.nn.Linear(4, 3), max_total=5)
            >>> oracle.grant(torch.arange(3), 1).tolist(), oracle.grant(torch.arange(3), 4).tolist(), oracle.refusals
            ([1, 1, 1], [2, 2, 1], 1)
        """
        idx = torch.as_tensor(idx).reshape(-1)
        wanted = self._own_left(idx.cpu().long()).clamp(min=0, max=max(int(k), 0))
        total = self.total_remaining()
        granted = wanted if total >= UNLIMITED else share_total(wanted, total)
        if bool((granted < wanted).any()):
            self.note_refusal()
        return granted.to(idx.device)

    def affordable(self, idx, k: int = 1) -> torch.Tensor:
        """``bool[len(idx)]``: the samples that can pay ``k`` more queries each, all of them together
        within the shared total (the first ones in ``idx``'s order when it cannot pay for all)."""
        idx = torch.as_tensor(idx).reshape(-1)
        ok = self._own_left(idx.cpu().long()) >= k
        total = self.total_remaining()
        if total < UNLIMITED:
            within_total = ok.cumsum(0) <= total // max(int(k), 1)
            if bool((ok & ~within_total).any()):
                self.note_refusal()  # the shared total left out samples their own budgets could pay for
            ok &= within_total
        return ok.to(idx.device)

    def __call__(self, x: torch.Tensor, idx=None) -> torch.Tensor:
        """Scores for the rows of ``x`` (``idx[i]``: the sample row ``i`` belongs to; default row ``i``)."""
        if isinstance(x, torch.Tensor) and x.requires_grad:
            raise GradientRefusedError(
                "an oracle is a black box and never gives gradients, but this input requires grad; "
                "query with x.detach() (score-based attacks need only forward passes)")
        rows = self._rows(x, idx)
        self._grow(int(rows.max()) + 1 if rows.numel() else 0)
        added = torch.bincount(rows, minlength=len(self.queries))
        if self.max_queries is not None and bool((self.queries + added > self.max_queries).any()):
            worst = int((self.queries + added - self.max_queries).argmax())
            raise QueryBudgetExceeded(
                f"this call would take sample {worst} to {int(self.queries[worst] + added[worst])} queries, over its "
                f"budget max_queries={self.max_queries}; check oracle.remaining(idx) before querying")
        if rows.numel() and rows.numel() > (left := self.total_remaining()):
            self.note_refusal()
            raise QueryBudgetExceeded(
                f"this call asks {rows.numel()} queries but only {left} are left in all (max_total="
                f"{self.max_total}, or the model's own budget); check oracle.remaining(idx) before querying")
        with torch.no_grad():
            out = self.model(x, idx) if isinstance(self.model, Oracle) else self.model(x)
        self.queries += added
        self.total += int(rows.numel())
        if self.output == "label":
            return out.argmax(dim=1) if out.ndim > 1 else out
        if self.output == "rounded":
            return torch.round(out, decimals=self.decimals)
        return out

    def __repr__(self) -> str:
        return (f"Oracle(max_queries={self.max_queries}, max_total={self.max_total}, output={self.output!r}, "
                f"total={self.total})")


def as_oracle(model_or_oracle, max_queries: int | None = None, n: int | None = None) -> Oracle:
    """An Oracle for ``model_or_oracle``: a model is wrapped; an Oracle is passed through as is.

    With ``max_queries`` an Oracle is wrapped in a view with that per-sample budget for this use
    (say, one attack call), the outer oracle still counting and enforcing its own budget.

    Example:
        >>> oracle = as_oracle(torch.nn.Linear(2, 2))
        >>> as_oracle(oracle) is oracle
        True
    """
    if isinstance(model_or_oracle, Oracle) and max_queries is None:
        return model_or_oracle
    return Oracle(model_or_oracle, max_queries=max_queries, n=n)


def requires_scores(scores: torch.Tensor, attack: str) -> torch.Tensor:
    """Check an oracle answered with scores ``[B, K]``: score-based attacks cannot use labels only."""
    if scores.ndim != 2 or not scores.is_floating_point():
        raise GibbonInputError(f"{attack} is score-based and needs scores [B, K]; this oracle returns labels only "
                               "(use a decision-based attack)")
    return scores


def to_probabilities(scores: torch.Tensor) -> torch.Tensor:
    """Scores as probabilities: rows already non-negative and summing to 1 are kept, others are softmaxed.

    Example:
        >>> to_probabilities(torch.tensor([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    if bool((scores >= 0).all()) and bool(torch.allclose(scores.sum(dim=1), torch.ones(()).to(scores), atol=1e-3)):
        return scores
    return scores.softmax(dim=1)
