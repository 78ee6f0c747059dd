"""Learning-based model extraction: train a copy ("student") on what a black box answers.

Knockoff Nets (Orekondy, Schiele & Fritz 2019, "Knockoff Nets: Stealing Functionality of
Black-Box Models", CVPR, arXiv:1812.02766): the adversary sends natural images from *some*
distribution (the victim's own, a related one, or an unrelated one) and trains a student of its
own architecture on the answers, with the soft cross-entropy to the victim's probabilities when
the API gives them (the labels, one-hot, when it does not). Here the queries are drawn at random
from the adversary's pool (the paper's "random" policy; the adaptive bandit policy is not
implemented).

The expensive part is the answers: each costs a query, a remote API charges for it, and a killed
run must not pay twice. :func:`collect_answers` therefore asks in batches and, given a ``store``
file, writes the answers so far atomically after every batch; a rerun reads them back and asks
only for the rest. A shared budget (an :class:`~gibbon.oracles.Oracle`'s ``max_total``, a served
token's budget through :class:`~gibbon.oracles.HttpOracle`) stops the collection cleanly, with
the answers it paid for.

Fidelity (:func:`~gibbon.extraction.equation_solving.fidelity`: the share of held-out inputs on
which student and victim agree) is the paper's measure of a copy; the victim's labels on those
inputs are the caller's to provide (a reproduction reads them off the victim; a real adversary
pays queries for them).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.oracles.base import QueryBudgetExceeded, as_oracle, to_probabilities
from gibbon.serve.payload import batch_digest


@dataclass
class Answers:
    """What the oracle answered for the first ``len(targets)`` rows of the query set.

    Attributes:
        targets: ``(n, K)`` probabilities (the one-hot of the label when the API gives labels only).
        kind: ``"probabilities"`` or ``"labels"``.
        queries: queries this call paid for (answers read back from a store cost none).
        stopped_by_budget: the oracle's budget ran out before every row was answered.
    """

    targets: torch.Tensor
    kind: str
    queries: int = 0
    stopped_by_budget: bool = False


def answers_as_targets(answer: torch.Tensor, num_classes: int | None) -> tuple[torch.Tensor, str]:
    """An oracle's answer as training targets: probabilities ``(B, K)`` (logits are softmaxed), or
    the one-hot of labels ``(B,)`` (``num_classes`` needed then)."""
    if answer.ndim == 2 and answer.is_floating_point():
        if not bool(torch.isfinite(answer).all()):
            raise GibbonInputError("the oracle answered NaN or infinite scores; a copy cannot be trained on them")
        return to_probabilities(answer.float()).cpu(), "probabilities"
    if answer.ndim != 1:
        raise GibbonInputError(f"the oracle answered shape {tuple(answer.shape)}; expected scores (B, K) or labels (B,)")
    if num_classes is None:
        raise GibbonInputError("the oracle answers labels only: pass num_classes so they can be one-hot encoded")
    labels = answer.long().cpu()
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise GibbonInputError(f"the oracle answered labels outside 0..{num_classes - 1}")
    return torch.nn.functional.one_hot(labels, num_classes).float(), "labels"


def _read_store(path: Path, queries: torch.Tensor) -> Answers | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as saved:
        targets, kind, digest = torch.from_numpy(saved["targets"]), str(saved["kind"]), str(saved["digest"])
    if digest != batch_digest(queries[:len(targets)]):
        raise GibbonInputError(f"{path} holds answers for other queries (another pool, seed or order); "
                               "delete it or pass another store path")
    return Answers(targets=targets, kind=kind)


def _write_store(path: Path, answers: Answers, queries: torch.Tensor) -> None:
    from gibbon.zoo.io import write_npz_atomic

    write_npz_atomic(path, {"targets": answers.targets.numpy(), "kind": np.array(answers.kind),
                            "digest": np.array(batch_digest(queries[:len(answers.targets)]))})


def collect_answers(oracle, queries: torch.Tensor, *, num_classes: int | None = None, batch_size: int = 256,
                    store=None, progress: bool = False) -> Answers:
    """Ask ``oracle`` about every row of ``queries``, in order, batch by batch, and keep what it says.

    Args:
        oracle: an :class:`~gibbon.oracles.Oracle` (or a model, wrapped and counted).
        queries: the inputs ``(n, C, H, W)``.
        num_classes: needed when the oracle answers labels only.
        batch_size: rows per call.
        store: optional ``.npz`` path; answers so far are written there atomically after each
            batch, and a rerun with the same queries asks only for the rows not yet answered.
        progress: a progress bar on stderr.

    Returns:
        :class:`Answers` for the first ``len(targets)`` rows: all of them, or the prefix the
        oracle's shared budget paid for (``stopped_by_budget``).
    """
    oracle = as_oracle(oracle)
    if batch_size < 1:
        raise GibbonInputError(f"batch_size must be >= 1, got {batch_size}")
    path = Path(store) if store is not None else None
    done = _read_store(path, queries) if path is not None else None
    parts = [done.targets] if done is not None else []
    kind = done.kind if done is not None else None
    start, before = (len(done.targets) if done is not None else 0), oracle.total
    stopped = False
    from gibbon.zoo.training import _progress

    with _progress(progress and start < len(queries), 1) as bar:
        task = bar.add_task("queries", total=len(queries), completed=start) if bar is not None else None
        for lo in range(start, len(queries), batch_size):
            chunk = queries[lo:lo + batch_size]
            left = oracle.total_remaining()
            if left <= 0:
                stopped = True
                break
            chunk = chunk[:left]
            try:
                answer = oracle(chunk)
            except QueryBudgetExceeded:  # a remote budget spent by someone else meanwhile
                stopped = True
                break
            targets, got = answers_as_targets(answer, num_classes)
            if kind is not None and got != kind:
                raise GibbonInputError(f"the oracle answered {got} where earlier answers were {kind}; "
                                       "it changed its output style, start a new store")
            kind = got
            parts.append(targets)
            if path is not None:
                _write_store(path, Answers(torch.cat(parts), kind), queries)
            if bar is not None:
                bar.update(task, advance=len(chunk))
            if len(chunk) < len(queries[lo:lo + batch_size]):
                stopped = True
                break
    if not parts:
        raise GibbonInputError("the oracle's budget is spent: no query could be asked")
    return Answers(targets=torch.cat(parts), kind=kind, queries=oracle.total - before, stopped_by_budget=stopped)


def soft_cross_entropy(targets: torch.Tensor):
    """An objective for :func:`gibbon.zoo.fit` whose "labels" are row indices into ``targets``:
    the cross-entropy of the model's softmax to the victim's answer (Knockoff's training loss)."""

    def objective(model: nn.Module, x: torch.Tensor, rows: torch.Tensor):
        logits = model(x)
        loss = -(targets.to(logits.device)[rows] * logits.log_softmax(dim=1)).sum(dim=1).mean()
        return loss, None

    return objective


def train_student(student: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, epochs: int = 10,
                  min_steps: int = 0, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                  progress: bool = False) -> nn.Module:
    """Fit ``student`` (in place) to the answers ``targets`` for the inputs ``x``.

    ``epochs`` passes over the data, or more when that makes fewer than ``min_steps`` optimizer
    steps: a copy trained on 100 answers needs as many updates as one trained on 10,000.
    Returns the student in eval mode.
    """
    from gibbon import zoo
    from gibbon.data import Dataset

    if len(x) != len(targets) or len(x) == 0:
        raise GibbonInputError(f"train_student needs as many answers as inputs (>= 1), got {len(targets)} and {len(x)}")
    steps_per_epoch = math.ceil(len(x) / batch_size)
    epochs = max(int(epochs), math.ceil(min_steps / steps_per_epoch))
    num_classes = int(targets.shape[1])
    rows = Dataset("answers", "train", x, torch.arange(len(x)), tuple(str(i) for i in range(num_classes)))
    zoo.fit(student, rows, epochs=epochs, batch_size=batch_size, lr=lr, objective=soft_cross_entropy(targets),
            seed=seed, progress=progress)
    return student.eval()


@dataclass
class KnockoffResult:
    """A stolen copy and its fidelity curve (:func:`knockoff_nets`).

    Attributes:
        student: the copy trained on all the answers collected.
        queries: queries paid for (answers read back from a store cost none).
        answers: answers used (the largest budget reached).
        kind: ``"probabilities"`` or ``"labels"``.
        curve: per budget: ``{"queries", "fidelity", "accuracy", "seconds"}`` (fidelity/accuracy
            None without reference labels / true labels).
        stopped_by_budget: the oracle's budget ended the collection early.
    """

    student: nn.Module
    queries: int
    answers: int
    kind: str
    curve: list = field(default_factory=list)
    stopped_by_budget: bool = False

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "student"}


def agreement(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> float | None:
    """The share of ``x`` on which ``model``'s top-1 label equals ``labels`` (None without labels)."""
    if labels is None:
        return None
    from gibbon.zoo.training import predict_labels

    return float((predict_labels(model, x) == labels.cpu()).float().mean())


def knockoff_nets(oracle, pool: torch.Tensor, make_student, *, budgets, num_classes: int | None = None,
                  eval_x: torch.Tensor | None = None, victim_labels: torch.Tensor | None = None,
                  eval_y: torch.Tensor | None = None, epochs: int = 10, min_steps: int = 1000,
                  batch_size: int = 128, lr: float = 1e-3, seed: int = 0, query_batch: int = 256,
                  store=None, progress: bool = False) -> KnockoffResult:
    """Knockoff Nets (Orekondy et al. 2019, arXiv:1812.02766), random policy: steal ``oracle``
    by training students on its answers to ``max(budgets)`` images drawn from ``pool``.

    Args:
        oracle: the victim as a black box (an :class:`~gibbon.oracles.Oracle`, a model, or an
            :class:`~gibbon.oracles.HttpOracle` wrapped in one); probabilities or labels.
        pool: the adversary's images ``(N, C, H, W)``; a random order of them (``seed``) is
            queried. ``N`` must be at least ``max(budgets)`` (no image is asked twice).
        make_student: ``make_student() -> nn.Module``, a fresh copy to train (the adversary's
            architecture; it need not be the victim's).
        budgets: the query counts of the curve, e.g. ``(100, 1000, 10000)``: the answers are
            collected once, for the largest, and a fresh student is trained on each prefix.
        num_classes: needed for a labels-only oracle.
        eval_x, victim_labels: held-out inputs and the victim's labels on them, for fidelity.
        eval_y: their true labels, for the student's accuracy.
        epochs, min_steps, batch_size, lr: training of each student (:func:`train_student`).
        seed: the pool's order and the students' training.
        query_batch, store, progress: as :func:`collect_answers` (the bar covers the queries; the
            students train without one).

    Returns:
        :class:`KnockoffResult`; its ``student`` is the one trained on the largest budget reached.
    """
    budgets = sorted({int(b) for b in budgets})
    if not budgets or budgets[0] < 1:
        raise GibbonInputError(f"budgets must be query counts >= 1, got {budgets}")
    if len(pool) < budgets[-1]:
        raise GibbonInputError(f"the query pool has {len(pool)} images, fewer than the budget {budgets[-1]}; "
                               "give a larger pool or a smaller budget (each image is asked once)")
    if eval_x is None and (victim_labels is not None or eval_y is not None):
        raise GibbonInputError("victim_labels / eval_y need eval_x, the inputs they label")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(int(seed)))[:budgets[-1]]
    queries = pool[order]
    answers = collect_answers(oracle, queries, num_classes=num_classes, batch_size=query_batch, store=store,
                              progress=progress)
    got = len(answers.targets)
    reached = [b for b in budgets if b <= got] or [got]
    if answers.stopped_by_budget and reached[-1] < got:
        reached.append(got)
    curve, student = [], None
    for budget in reached:
        t0 = time.perf_counter()
        student = train_student(make_student(), queries[:budget], answers.targets[:budget], epochs=epochs,
                                min_steps=min_steps, batch_size=batch_size, lr=lr, seed=seed, progress=False)
        curve.append({"queries": budget, "fidelity": agreement(student, eval_x, victim_labels),
                      "accuracy": agreement(student, eval_x, eval_y), "seconds": time.perf_counter() - t0})
    return KnockoffResult(student=student, queries=answers.queries, answers=got, kind=answers.kind, curve=curve,
                          stopped_by_budget=answers.stopped_by_budget)
