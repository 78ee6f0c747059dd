"""Seeded, resumable training loop (:func:`fit`), clean accuracy (:func:`accuracy`) and BatchNorm
recalibration (:func:`recalibrate_batch_norm`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gibbon.core.checks import GibbonInputError
from gibbon.zoo.distributed import barrier, gather, rank_and_world, sum_across
from gibbon.zoo.precision import autocast_context, check_precision

CHECKPOINT_NAME = "checkpoint.pt"
SCHEDULES = ("constant", "cyclic", "step")
CYCLIC_PEAK = 0.4  # fraction of the epochs at which "cyclic" peaks (Wong et al.'s code: 2/5)
OPTIMIZERS = ("adam", "sgd", "sgd-nesterov")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        history: one dict per finished epoch: ``epoch`` (1-based), ``train_loss`` (mean objective),
            ``train_accuracy`` (on the logits the objective returned, None if it returned none),
            ``val_accuracy`` (None without ``val``), ``lr`` (at the epoch's last batch), ``seconds``.
        val_accuracy: the last epoch's validation accuracy (None without ``val``).
        resumed_from: number of epochs loaded from ``checkpoint_dir`` (0 for a fresh run).
        early_stopped: why training stopped before ``epochs`` (set by defenses with an
            early-stopping guard, e.g. ``fast``), else None.
        kept_epoch: the epoch whose weights the model holds when a guard restored an earlier
            epoch, else None.
    """

    history: list[dict] = field(default_factory=list)
    val_accuracy: float | None = None
    resumed_from: int = 0
    early_stopped: str | None = None
    kept_epoch: int | None = None

    @property
    def train_loss(self) -> float | None:
        return self.history[-1]["train_loss"] if self.history else None


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


@torch.no_grad()
def accuracy(model: nn.Module, dataset, batch_size: int = 500) -> float:
    """Fraction of ``dataset`` that ``model`` classifies correctly (argmax of the logits).

    Runs in eval mode and restores the model's previous train/eval mode afterwards.
    """
    n = len(dataset.y)
    if n == 0:
        raise GibbonInputError("cannot compute accuracy on an empty dataset")
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for i in range(0, n, batch_size):
            x = dataset.x[i:i + batch_size].to(device)
            y = dataset.y[i:i + batch_size].to(device)
            correct += int((model(x).argmax(dim=-1) == y).sum())
    finally:
        model.train(was_training)
    return correct / n


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, x: torch.Tensor, *, batch_size: int = 250) -> int:
    """Recompute every BatchNorm layer's running mean and variance as the plain average of the
    batch statistics over ``x`` (in mini-batches of ``batch_size``); returns the number of layers.

    Miyato et al.'s VAT code does this after training ("finetune batch stat", arXiv:1704.03976):
    during training the running averages follow whichever batches passed through in train mode
    (in semi-supervised VAT the 100 labelled images dominate them), so the test-time statistics
    are recomputed over the whole unlabelled set. Only the BatchNorm layers run in train mode;
    dropout and everything else stay in eval mode, so the statistics are those of the network
    used at test time. Weights are untouched; momentum and the model's mode are put back.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        >>> recalibrate_batch_norm(net, torch.randn(100, 3) + 5.0, batch_size=50)
        1
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    if len(x) < 2 or batch_size < 2:
        raise GibbonInputError(f"recalibrate_batch_norm needs at least 2 inputs and batch_size >= 2 (a batch "
                               f"variance), got {len(x)} inputs and batch_size {batch_size!r}")
    device = model_device(model)
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in layers]
    model.eval()
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch weighs the same
            m.train()
        for i in range(0, len(x), batch_size):
            batch = x[i:i + batch_size]
            if len(batch) >= 2:
                model(batch.to(device))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, mode in modes.items():
            m.training = mode
    return len(layers)


@torch.no_grad()
def predict_labels(model: nn.Module, x: torch.Tensor, *, batch_size: int = 500) -> torch.Tensor:
    """Argmax labels of ``model`` on ``x`` (eval mode, batched on the model's device, mode restored),
    as a CPU int64 tensor."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        parts = [model(x[i:i + batch_size].to(device)).argmax(dim=-1).cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def cross_entropy_objective(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Default objective: mean cross-entropy; returns ``(loss, logits)``."""
    logits = model(x)
    return F.cross_entropy(logits, y), logits


def make_schedule(schedule, lr: float, epochs: int) -> Callable[[float], float]:
    """Turn ``schedule`` into ``epoch_float -> lr`` (``epoch_float`` runs from 0 to ``epochs``).

    * None / ``"constant"``: ``lr`` throughout.
    * ``"cyclic"``: Wong, Rice & Kolter (2020, arXiv:2001.03994) triangle, 0 -> ``lr`` at
      ``2/5`` of the epochs -> 0 at ``epochs`` (the peak of their code's schedules).
    * ``"step"``: ``lr``, times 0.1 from 50% of the epochs, times 0.01 from 75%.
    * a callable: used as is.
    """
    if callable(schedule):
        return schedule
    if schedule is None or schedule == "constant":
        return lambda t: lr
    if schedule == "cyclic":
        peak = CYCLIC_PEAK * epochs

        def cyclic(t: float) -> float:
            return lr * max(0.0, t / peak if t <= peak else (epochs - t) / (epochs - peak))
        return cyclic
    if schedule == "step":
        return lambda t: lr * (1.0 if t < 0.5 * epochs else 0.1 if t < 0.75 * epochs else 0.01)
    raise GibbonInputError(
        f"unknown schedule {schedule!r}; use one of {', '.join(SCHEDULES)} or a callable epoch -> lr"
    )


def make_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name in ("sgd", "sgd-nesterov"):
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=name == "sgd-nesterov")
    raise GibbonInputError(f"unknown optimizer {optimizer_name(name)!r}; use one of {', '.join(OPTIMIZERS)}")


def optimizer_name(name) -> str:
    return name if isinstance(name, str) else type(name).__name__


def _data_fingerprint(ds) -> str:
    h = hashlib.sha256()
    h.update(repr((tuple(ds.x.shape), str(ds.x.dtype))).encode())
    h.update(repr(float(ds.x.sum(dtype=torch.float64))).encode())
    h.update(ds.y.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _run_config(model, train, *, epochs, batch_size, optimizer, lr, schedule, objective, seed, weight_decay):
    """What must match for a checkpoint to be resumed. ``epochs`` is included only when the
    schedule depends on it (so a 1-epoch run can be extended to 2 with a constant lr)."""
    sched = schedule if (schedule is None or isinstance(schedule, str)) else getattr(
        schedule, "__qualname__", type(schedule).__name__)
    return {
        "seed": int(seed),
        "batch_size": int(batch_size),
        "optimizer": optimizer,
        "lr": float(lr),
        "weight_decay": float(weight_decay),
        "schedule": sched,
        "epochs": int(epochs) if schedule in ("cyclic", "step") else None,
        "objective": None if objective is None else getattr(objective, "__qualname__", type(objective).__name__),
        "data": _data_fingerprint(train),
        "params": [[k, list(v.shape)] for k, v in model.state_dict().items()],
    }


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def _progress(enabled: bool, total_epochs: int):
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        yield bar


def fit(
    model: nn.Module,
    train,
    *,
    epochs: int = 1,
    batch_size: int = 128,
    optimizer: str = "adam",
    lr: float = 1e-3,
    schedule=None,
    objective: Callable | None = None,
    val=None,
    seed: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = True,
    device=None,
    weight_decay: float = 0.0,
    callback: Callable[[int, dict], None] | None = None,
    precision: str = "fp32",
) -> FitResult:
    """Train ``model`` on ``train`` (a :class:`~gibbon.data.dataset.Dataset`) in place.

    Args:
        epochs: total number of epochs (a resumed run counts the finished ones).
        batch_size: mini-batch size; the last batch of an epoch may be smaller.
        optimizer: ``"adam"``, ``"sgd"`` (momentum 0.9) or ``"sgd-nesterov"`` (Nesterov momentum 0.9,
            as Carlini & Wagner's training code).
        lr: (peak) learning rate.
        schedule: None/``"constant"``, ``"cyclic"``, ``"step"`` (see :func:`make_schedule`) or a
            callable ``epoch_float -> lr``; the lr is set before every batch from the fractional
            epoch ``epoch + (i + 1) / n_batches``.
        objective: ``objective(model, x, y)`` returning a scalar loss, or ``(loss, logits)`` to
            also report training accuracy; default mean cross-entropy. Plug adversarial-training
            objectives in here.
        val: optional Dataset; its accuracy is measured after every epoch.
        seed: seeds the shuffling (a private ``torch.Generator``) and, inside
            ``torch.random.fork_rng``, the global RNG that dropout and objectives use -- the
            caller's global RNG state is left untouched. The model's initial weights are the
            caller's business: seed before building it.
        checkpoint_dir: if given, after every epoch the model and optimizer state, the epoch,
            RNG states, history and run config are written atomically to
            ``checkpoint_dir/checkpoint.pt`` (``torch.save``; read back with
            ``weights_only=True``). If a checkpoint from a run with the same config is there,
            training resumes after its last finished epoch and ends with the same weights as an
            uninterrupted run. A checkpoint from a different config is an error.
        progress: show a rich progress bar on stderr.
        device: where mini-batches (and the model) go; default: the model's parameters' device.
        weight_decay: L2 weight decay passed to the optimizer.
        callback: ``callback(epoch, history_entry)`` after each epoch (after its checkpoint is
            written); raising from it stops training, e.g. for early stopping.
        precision: ``"fp32"``, ``"bf16"`` (autocast on CPU or CUDA) or ``"fp16"`` (CUDA, with a
            gradient scaler): the objective, inner attack included, runs under ``torch.autocast``
            (:mod:`gibbon.zoo.precision`); weights and optimizer state stay float32.

    Data parallel: inside a ``torch.distributed`` process group (``torchrun``, see
    :mod:`gibbon.zoo.distributed`) the model trains as a ``DistributedDataParallel`` module.
    Every process draws the same permutation and takes its slice of each global mini-batch of
    ``batch_size``, its loss weighted by its share of the batch, so the averaged gradient is
    the one-process gradient of the whole batch. Process ``r`` seeds its global RNG (random
    starts, dropout) with ``seed + r``; rank 0 draws what one process draws. Losses and
    accuracies are summed over the processes, so every process sees the same history (and an
    early-stopping callback decides the same everywhere); rank 0 writes the checkpoint, with
    every rank's RNG state, and prints the progress bar. A global batch smaller than the
    number of processes (a last one) is skipped.

    Returns:
        A :class:`FitResult`. The model is left in ``eval()`` mode.
    """
    if not isinstance(model, nn.Module):
        raise GibbonInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if int(epochs) != epochs or epochs < 0:
        raise GibbonInputError(f"epochs must be a whole number >= 0, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise GibbonInputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    n = len(train.y)
    if n == 0:
        raise GibbonInputError("the training set is empty")
    epochs, batch_size = int(epochs), int(batch_size)
    rank, world = rank_and_world()
    if batch_size < world:
        raise GibbonInputError(f"batch_size {batch_size} cannot be split over {world} processes; "
                               f"use a batch_size >= {world}")
    device = torch.device(device) if device is not None else model_device(model)
    check_precision(precision, device)
    model.to(device)
    lr_at = make_schedule(schedule, lr, epochs)
    opt = make_optimizer(optimizer, model.parameters(), lr, weight_decay)
    objective_fn = objective or cross_entropy_objective
    config = _run_config(model, train, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                         schedule=schedule, objective=objective, seed=seed, weight_decay=weight_decay)
    if world > 1:  # only then: one-process checkpoints keep their config (and zoo caches their keys)
        config["world_size"] = world
    if precision != "fp32":
        config["precision"] = precision
    # float16's narrow exponent range needs loss scaling; bfloat16 has float32's and does not
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    trained = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    shuffle = torch.Generator().manual_seed(int(seed))
    n_batches = math.ceil(n / batch_size)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    cuda = device.type == "cuda"
    fork_devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []

    result = FitResult()
    with torch.random.fork_rng(devices=fork_devices):
        torch.random.default_generator.manual_seed(int(seed) + rank)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(int(seed) + rank)
        start = 0
        if ckpt_path is not None and ckpt_path.exists():
            start = _resume(ckpt_path, config, epochs, model, opt, shuffle, device, result, rank)
        if ckpt_path is not None and rank == 0:
            ckpt_path.parent.mkdir(parents=True, exist_ok=True)

        with _progress(progress and start < epochs and rank == 0, epochs) as bar:
            for epoch in range(start, epochs):
                t0 = time.perf_counter()
                trained.train()
                task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=n_batches) if bar is not None else None
                perm = torch.randperm(n, generator=shuffle)
                loss_sum, correct, counted, cur_lr = 0.0, 0, 0, lr
                for i in range(n_batches):
                    idx = perm[i * batch_size:(i + 1) * batch_size]
                    share = 1.0
                    if world > 1:
                        if len(idx) < world:
                            continue
                        mine = idx.tensor_split(world)[rank]
                        share, idx = len(mine) * world / len(idx), mine
                    x, y = train.x[idx].to(device), train.y[idx].to(device)
                    cur_lr = float(lr_at(epoch + (i + 1) / n_batches))
                    for group in opt.param_groups:
                        group["lr"] = cur_lr
                    with autocast_context(precision, device):
                        out = objective_fn(trained, x, y)
                    loss, logits = out if isinstance(out, tuple) else (out, None)
                    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                        raise GibbonInputError("objective(model, x, y) must return a scalar loss tensor")
                    opt.zero_grad(set_to_none=True)
                    scaled = loss * share if share != 1.0 else loss
                    if scaler is None:
                        scaled.backward()
                        opt.step()
                    else:
                        scaler.scale(scaled).backward()
                        scaler.step(opt)
                        scaler.update()
                    loss_sum += float(loss.detach()) * len(y)
                    if logits is not None and correct is not None:
                        correct += int((logits.detach().argmax(dim=-1) == y).sum())
                    else:
                        correct = None
                    counted += len(y)
                    if bar is not None:
                        bar.update(task, advance=1)
                if world > 1:  # every process gets the whole epoch's numbers
                    sums = sum_across([loss_sum, -1.0 if correct is None else correct, counted], device)
                    loss_sum, counted = sums[0], int(sums[2])
                    correct = None if correct is None else int(sums[1])
                entry = {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / counted,
                    "train_accuracy": None if correct is None else correct / counted,
                    "val_accuracy": accuracy(model, val) if val is not None else None,
                    "lr": cur_lr,
                    "seconds": time.perf_counter() - t0,
                }
                result.history.append(entry)
                if bar is not None:
                    acc = "" if entry["train_accuracy"] is None else f" acc {entry['train_accuracy']:.3f}"
                    vacc = "" if entry["val_accuracy"] is None else f" val {entry['val_accuracy']:.3f}"
                    loss_text = f"loss {entry['train_loss']:.4f}"
                    bar.update(task, description=f"epoch {epoch + 1}/{epochs} {loss_text}{acc}{vacc}")
                rng_states = None
                if world > 1 and ckpt_path is not None:  # a collective: every rank has the same ckpt_path
                    rng_states = gather({"cpu": torch.get_rng_state(),
                                         "cuda": torch.cuda.get_rng_state(device) if cuda else None})
                if ckpt_path is not None and rank == 0:
                    _atomic_torch_save({
                        "format": "gibbon-checkpoint/1",
                        "config": json.dumps(config, sort_keys=True),
                        "epoch": epoch + 1,
                        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "optimizer": opt.state_dict(),
                        "cpu_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device) if cuda else None,
                        "shuffle_rng": shuffle.get_state(),
                        "history": json.dumps(result.history),
                        **({"cpu_rng_ranks": rng_states} if world > 1 else {}),
                    }, ckpt_path)
                barrier()  # no process starts an epoch before its checkpoint is on disk
                if callback is not None:
                    callback(epoch + 1, entry)

    model.eval()
    if result.history:
        result.val_accuracy = result.history[-1]["val_accuracy"]
    return result


def _resume(path: Path, config: dict, epochs: int, model, opt, shuffle, device, result: FitResult,
            rank: int = 0) -> int:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file: say which and what to do
        raise GibbonInputError(f"cannot read checkpoint {path} ({e}); delete it to train from scratch") from None
    if ckpt.get("config") != json.dumps(config, sort_keys=True):
        raise GibbonInputError(
            f"{path} is a checkpoint of a different training run (other model, data, hyper-"
            "parameters or number of processes); use another checkpoint_dir, or delete it to train from scratch"
        )
    done = int(ckpt["epoch"])
    if done > epochs:
        raise GibbonInputError(
            f"{path} already holds {done} epochs but epochs={epochs} was asked; "
            "ask for at least as many epochs or use another checkpoint_dir"
        )
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    mine = ckpt["cpu_rng_ranks"][rank] if "cpu_rng_ranks" in ckpt else {"cpu": ckpt["cpu_rng"],
                                                                         "cuda": ckpt.get("cuda_rng")}
    torch.set_rng_state(mine["cpu"])
    if mine.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], device)
    shuffle.set_state(ckpt["shuffle_rng"])
    result.history.extend(json.loads(ckpt["history"]))
    result.resumed_from = done
    return done
