"""Data-parallel training under ``torchrun``: the process group, and the few collectives :func:`gibbon.zoo.fit` needs.

``torchrun --nproc_per_node N -m gibbon.cli train ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address in their environment;
:func:`init_from_env` joins them into one process group (gloo on CPU, nccl on CUDA, one GPU per
local rank). Outside torchrun (or with one process) nothing is initialised and every helper is
the one-process identity, so the same code trains either way.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from gibbon.core.checks import GibbonInputError


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0, 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Rank 0, the process that prints and writes files."""
    return rank_and_world()[0] == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> str:
    """Join torchrun's process group if this process was started by it; returns the device this rank uses.

    CPU ranks use gloo. CUDA ranks use nccl, each on GPU ``LOCAL_RANK``.
    """
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        return device
    if not dist.is_available():
        raise GibbonInputError("this torch build has no torch.distributed; train in one process (without torchrun)")
    cuda = str(device).startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise GibbonInputError(f"torchrun started local rank {local} but this machine has "
                                   f"{torch.cuda.device_count()} GPUs; use --nproc_per_node <= that, or --device cpu")
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def sum_across(values: list[float], device) -> list[float]:
    """Element-wise sums over all processes (the values themselves in one process)."""
    if rank_and_world()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather(obj) -> list:
    """Every process's ``obj``, in rank order (``[obj]`` in one process)."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()
