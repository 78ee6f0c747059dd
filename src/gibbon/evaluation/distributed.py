"""Evaluations fanned out over worker processes: Ray locally or on a cluster, with resume.

:func:`run_sharded` cuts one or several prepared evaluations (:func:`gibbon.evaluation.evaluate.prepare_evaluation`,
one per model) into shards (:mod:`gibbon.evaluation.shards`: a few mini-batches of one
(attack, eps) unit, or one eps's chain under a cascade), skips the shards already saved beside
each evaluation's checkpoint, hands the rest to an executor and saves each one as it comes
back. Merged, the shards give the per-sample results of one process.

Executors: :class:`RayExecutor` (``pip install 'gibbon[ray]'``; a local Ray with ``workers``
CPUs by default, or ``address="auto"`` / ``"ray://host:10001"`` for a running cluster) and
:class:`LocalExecutor` (the same shards, one after the other, here). The driver writes every
shard file, so workers need no shared file system; each task gets its model and data from
Ray's object store, put there once per evaluation.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from gibbon.core.checks import GibbonInputError
from gibbon.evaluation.inputs import eval_mode
from gibbon.evaluation.runner import ProgressBar, Runner
from gibbon.evaluation.shards import ShardStore, assemble_units, plan_shards, run_shard, shard_directory

RAY_MISSING = "Ray is not installed: pip install 'gibbon[ray]' (or run without --ray)"


class LocalExecutor:
    """Runs every shard here, in submission order: the reference the Ray path must equal."""

    name, workers = "local", 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def put(self, obj):
        return obj

    def map_unordered(self, function: Callable, calls: list[tuple]) -> Iterator[tuple[int, object]]:
        for i, args in enumerate(calls):
            yield i, function(*args)


class RayExecutor:
    """Shards as Ray tasks of one CPU each (``gpus_per_task`` GPUs too, for ``--device cuda``).

    Args:
        address: None starts a local Ray with ``workers`` CPUs (and stops it afterwards);
            ``"auto"`` or ``"ray://host:port"`` joins a running cluster, whose size sets the parallelism.
        workers: CPUs of the local Ray (default: all of this machine's).
        threads_per_worker: torch threads inside each task (1: the workers share the cores).
        gpus_per_task: GPUs each task reserves (0 on CPU; e.g. 0.5 packs two tasks per GPU).
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
                 gpus_per_task: float = 0.0):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise GibbonInputError(f"workers must be a whole number >= 1, got {workers!r}")
        if address is not None and workers is not None:
            raise GibbonInputError("workers sizes a local Ray; a cluster (address) brings its own: pass one of them")
        if threads_per_worker < 1:
            raise GibbonInputError(f"threads_per_worker must be >= 1, got {threads_per_worker!r}")
        self.address, self.workers, self.threads = address, workers, int(threads_per_worker)
        self.gpus_per_task = float(gpus_per_task)
        self._started = False

    def __enter__(self):
        try:
            import ray
        except ImportError:
            raise GibbonInputError(RAY_MISSING) from None
        if not ray.is_initialized():
            if self.address not in (None, "auto"):
                check_reachable(self.address)
            try:
                if self.address is None:
                    ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=self.address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                what = "start a local Ray" if self.address is None else f"join the Ray cluster at {self.address}"
                raise GibbonInputError(f"could not {what} ({str(err).splitlines()[0]}); check the address, "
                                       "or run without --ray") from None
            self._started = True
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        return self

    def __exit__(self, *exc):
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        return False

    def put(self, obj):
        import ray

        return ray.put(obj)

    def map_unordered(self, function: Callable, calls: list[tuple]) -> Iterator[tuple[int, object]]:
        import ray

        remote = ray.remote(num_cpus=1, num_gpus=self.gpus_per_task)(function)
        index = {remote.remote(*args): i for i, args in enumerate(calls)}
        pending = list(index)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield index[done[0]], ray.get(done[0])
        finally:
            for ref in pending:  # the caller stopped early (an error, Ctrl-C): do not leave work running
                ray.cancel(ref)


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """A one-line error now for a cluster address nobody answers at (Ray itself retries for minutes)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise GibbonInputError(f"--address must be auto, HOST:PORT or ray://HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise GibbonInputError(f"no Ray cluster answers at {address} ({err.strerror or err}); start one with "
                               "`ray start --head`, check the address, or drop --address for a local Ray") from None


def shard_worker(context: tuple, shard) -> dict:
    """What a worker runs: one shard of one evaluation (``context`` as :func:`run_sharded` puts it)."""
    model, x, y, target, clean, chosen, eps_values, setup = context
    if setup["threads"] is not None:
        torch.set_num_threads(setup["threads"])
    from gibbon.core.norms import get_norm

    runner = Runner(model, x, y, target, get_norm(setup["norm"]), tuple(setup["bounds"]), setup["batch_size"],
                    setup["seed"], setup["device"], ProgressBar(False, 0))
    return run_shard(runner, chosen, eps_values, clean, shard)  # run_sharded sent the model in eval mode


def run_sharded(plans: list, executor, *, progress: bool = True, batches_per_shard: int = 1) -> list[dict]:
    """Run prepared evaluations as shards on ``executor``; one ``{(attack, eps): unit}`` dict per plan.

    Each plan's ``config["shards"]`` records how many shards there were, how many were loaded
    from an earlier run and how many were computed now.
    """
    if isinstance(batches_per_shard, bool) or not isinstance(batches_per_shard, int) or batches_per_shard < 1:
        raise GibbonInputError(f"batches_per_shard must be a whole number >= 1, got {batches_per_shard!r}")
    shards, stores, results, pending = [], [], [], []
    for p, plan in enumerate(plans):
        mine = plan_shards(plan.chosen, len(plan.eps_values), plan.clean, plan.runner.batch_size,
                           cascade=plan.cascade, batches_per_shard=batches_per_shard)
        store = ShardStore(shard_directory(plan.checkpoint), plan.fingerprint, plan.clean)
        done = {}
        for shard in mine:
            saved = store.load(shard)
            if saved is None:
                pending.append((p, shard))
            else:
                done[shard.key] = saved
        shards.append(mine)
        stores.append(store)
        results.append(done)
        plan.config["shards"] = {"total": len(mine), "resumed": len(done), "computed": len(mine) - len(done),
                                 "batches_per_shard": batches_per_shard, "executor": executor.name}

    with contextlib.ExitStack() as stack, ProgressBar(progress and bool(pending), len(pending)) as bar:
        for plan in plans:  # models travel to the workers in eval mode
            stack.enter_context(eval_mode(plan.model))
        threads = getattr(executor, "threads", None)
        contexts = [executor.put((plan.model, plan.runner.x, plan.runner.y, plan.runner.target, plan.clean,
                                  plan.chosen, plan.eps_values,
                                  {"norm": plan.norm, "bounds": list(plan.runner.bounds),
                                   "batch_size": plan.runner.batch_size, "seed": plan.seed,
                                   "device": str(plan.runner.device), "threads": threads}))
                    for plan in plans]
        bar.describe(f"{len(pending)} shards on {executor.name} ({executor.workers} workers)")
        calls = [(contexts[p], shard) for p, shard in pending]
        for i, result in executor.map_unordered(shard_worker, calls):
            p, shard = pending[i]
            stores[p].save(shard, result)
            results[p][shard.key] = result
            bar.advance()
    return [assemble_units(shards[p], results[p], plan.chosen, plan.eps_values, plan.clean, plan.runner.width)
            for p, plan in enumerate(plans)]


def make_executor(ray: bool = False, address: str | None = None, workers: int | None = None):
    """The executor a command line asks for: None (run in one process) unless ``--ray``, or an
    ``--address`` / ``--workers`` that only make sense with Ray (and so imply it)."""
    if not ray and address is None and workers is None:
        return None
    return RayExecutor(address=address, workers=workers)
