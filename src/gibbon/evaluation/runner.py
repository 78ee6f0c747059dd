"""Running one attack over a set of samples: mini-batches, generators, counting, validation.

Mini-batching happens here, never inside attacks. Each attack call gets its own CPU generator
(:func:`attack_seed`), its outputs are checked against the threat model (finite, inside the
bounds, inside the eps-ball for budget attacks) and its cost counted with :class:`CountingModel`.

A black box with a shared query budget (``Oracle(max_total=...)``, a remote API's, possibly
behind a gradient estimator) is split fairly: each (attack, eps) unit may spend its share of
what is left over the units still to run, each batch its share of the unit's part over the
samples still to attack, and one query per sample of the batch is held back so the result can
be checked. What a batch leaves unspent rolls over. A batch that cannot pay even for that check
is not attacked; a batch whose attack the budget cut short (a refused call, or samples
``affordable()`` left out) keeps what the attack returned. Both are counted and reported as a
warning, since robust accuracy there is only an upper bound.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from gibbon.core.checks import GibbonInputError
from gibbon.core.goals import is_adversarial
from gibbon.evaluation.counting import CountingModel
from gibbon.oracles.base import UNLIMITED, Oracle, QueryBudgetExceeded

SEED_SCHEME = "seed + 1000 * batch_index + attack_index"


def attack_seed(seed: int, batch_index: int, attack_index: int) -> int:
    """Seed of the CPU generator given to attack ``attack_index`` on its ``batch_index``-th batch.

    ``batch_index`` counts the mini-batches of the samples handed to that attack in one
    (attack, eps) unit, so a rerun (or a resumed run) draws the same numbers.
    """
    return seed + 1000 * batch_index + attack_index


def within(distance: torch.Tensor, eps: float, width: float) -> torch.Tensor:
    # a few float32 ulps of slack: rounding of x + delta alone can exceed eps slightly
    return distance <= eps * (1 + 1e-5) + 1e-6 * width


def distance_stats(dist: torch.Tensor) -> dict:
    values = dist.double().cpu().numpy()
    if values.size == 0:
        return {"count": 0, "mean": None, "median": None, "q25": None, "q75": None, "q90": None}
    q25, median, q75, q90 = (float(v) for v in np.quantile(values, [0.25, 0.5, 0.75, 0.9]))
    return {"count": int(values.size), "mean": float(values.mean()), "median": median,
            "q25": q25, "q75": q75, "q90": q90}


def oracle_of(model) -> Oracle | None:
    """The oracle that answers ``model``'s queries: the model itself, or the one behind a gradient estimator."""
    oracle = model if isinstance(model, Oracle) else getattr(model, "oracle", None)
    return oracle if isinstance(oracle, Oracle) else None


def shared_budget(model) -> Oracle | None:
    """The oracle whose shared query total limits ``model``, or None when nothing limits the total."""
    oracle = oracle_of(model)
    return oracle if oracle is not None and oracle.total_remaining() < UNLIMITED else None


def batch_share(unit_left: int, samples_left: int, batch: int) -> int:
    """Queries a batch of ``batch`` samples may use when ``unit_left`` queries are left for the
    ``samples_left`` samples of its unit still to attack (this batch included): its fair part."""
    return unit_left * batch // max(samples_left, 1)


class Runner:
    """Runs one attack over a set of sample indices in mini-batches; counts, times, validates."""

    def __init__(self, model, x, y, target, norm, bounds, batch_size, seed, device, bar):
        self.model, self.x, self.y, self.target = model, x, y, target
        self.norm, self.bounds, self.batch_size, self.seed, self.device = norm, bounds, batch_size, seed, device
        self.width = bounds[1] - bounds[0]
        self.counting = CountingModel(model)
        self.bar = bar
        self.oracle, self.budget = oracle_of(model), shared_budget(model)
        self.units_left = 1  # (attack, eps) units still to run, this one included: set by evaluate()

    def batches(self, count: int) -> int:
        return math.ceil(count / self.batch_size)

    def predict(self, indices: torch.Tensor) -> torch.Tensor:
        """Clean logits of the given samples (batched, no grad), on the CPU."""
        out = []
        with torch.no_grad():
            for chunk in indices.split(self.batch_size):
                out.append(self.model(self.x[chunk].to(self.device)).detach().cpu())
        return torch.cat(out)

    def run(self, attack_index: int, attack, eps: float, active: torch.Tensor, first_batch: int = 0) -> dict:
        """Attack samples ``active`` (indices) at ``eps``; success / distance / validity per sample.

        ``first_batch``: the index, within the whole unit, of ``active``'s first mini-batch, when
        ``active`` is a shard of it (:mod:`gibbon.evaluation.shards`): the generators are seeded
        with the unit's batch indices, so a shard draws what one process would.
        """
        success = torch.zeros(len(active), dtype=torch.bool)
        distance = torch.zeros(len(active), dtype=torch.float64)
        invalid, worst = 0, 0.0
        unattacked = cut = 0
        raised: dict[str, int] = {}  # first line of each exception the attack raised -> samples affected
        self.counting.reset()
        queries_before = self.oracle.total if self.oracle is not None else 0
        start = time.perf_counter()
        offset = 0
        unit_left = self.budget.total_remaining() // max(self.units_left, 1) if self.budget is not None else None
        self.units_left = max(self.units_left - 1, 1)
        for b, chunk in enumerate(active.split(self.batch_size) if len(active) else ()):
            xb, yb = self.x[chunk].to(self.device), self.y[chunk].to(self.device)
            tb = self.target[chunk].to(self.device) if self.target is not None else None
            generator = torch.Generator(device="cpu").manual_seed(attack_seed(self.seed, first_batch + b, attack_index))
            before_total = self.budget.total if self.budget is not None else 0
            if self.budget is None:
                try:
                    x_adv = self._attack(attack, xb, yb, tb, eps, generator)
                except (GibbonInputError, QueryBudgetExceeded):
                    raise
                except RuntimeError as err:  # no gradient path (autograd's error): a warning, not a traceback
                    line = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                    raised[line] = raised.get(line, 0) + len(chunk)
                    x_adv = xb
            else:
                share = min(batch_share(unit_left, len(active) - offset, len(chunk)), self.budget.total_remaining())
                if share < len(chunk):  # not even one query per sample to check a result: leave the batch alone
                    unattacked += len(chunk)
                    offset += len(chunk)
                    self.bar.advance()
                    continue
                before_refusals = self.budget.refusals
                # the attack may spend the share less one query per sample, kept to check its result
                with self.budget.holding(self.budget.total_remaining() - share + len(chunk)):
                    try:
                        x_adv = self._attack(attack, xb, yb, tb, eps, generator)
                    except QueryBudgetExceeded:  # an attack that cannot stop by itself: its batch counts as unattacked
                        x_adv = xb
                        unattacked += len(chunk)
                if self.budget.refusals > before_refusals and x_adv is not xb:
                    cut += len(chunk)
            if not isinstance(x_adv, torch.Tensor) or x_adv.shape != xb.shape:
                raise RuntimeError(f"attack {attack.name} returned {getattr(x_adv, 'shape', type(x_adv))}; "
                                   f"expected a tensor of shape {tuple(xb.shape)}")
            x_adv = x_adv.detach().to(device=xb.device, dtype=xb.dtype)
            with torch.no_grad():
                fooled = is_adversarial(self.model(x_adv), yb, tb)
            if tb is not None:
                fooled &= tb != yb  # reaching one's own label is not an attack
            flat = x_adv.reshape(len(chunk), -1)
            dist = self.norm.distance(x_adv - xb).double()
            slack = 1e-5 * self.width
            valid = (torch.isfinite(flat).all(dim=1) & (flat >= self.bounds[0] - slack).all(dim=1)
                     & (flat <= self.bounds[1] + slack).all(dim=1))
            if not attack.minimal:
                valid &= within(dist, eps, self.width)
            if (~valid).any():
                invalid += int((~valid).sum())
                worst = max(worst, float(torch.nan_to_num(dist[~valid], nan=math.inf).max()))
            success[offset:offset + len(chunk)] = (fooled & valid).cpu()
            distance[offset:offset + len(chunk)] = dist.cpu()
            offset += len(chunk)
            self.bar.advance()
            if self.budget is not None:
                unit_left -= self.budget.total - before_total  # the attack's queries and the check's
        warnings = []
        if unattacked or cut:
            warnings.append(
                f"the shared query budget limited attack {attack.name} at eps={eps:g}: of {len(active)} samples, "
                f"{unattacked} were not attacked and {cut} were attacked short of the full schedule "
                f"({self.budget.total_remaining()} queries left); robust accuracy there is an upper bound: "
                "give a larger budget, fewer samples or a cheaper attack")
        for line, count in raised.items():
            warnings.append(
                f"attack {attack.name} at eps={eps:g} raised on {count} of {len(active)} samples ({line}); they were "
                "counted as not broken, so robust accuracy is only an upper bound: the model may give no usable "
                "gradient (run `gibbon diagnose` or `gibbon evaluate --adaptive`)")
        if invalid:
            warnings.append(
                f"attack {attack.name} at eps={eps:g} returned {invalid} of {len(active)} inputs outside the threat "
                f"model (non-finite, outside bounds {tuple(self.bounds)}, or {self.norm.name} distance up to "
                f"{worst:.4g} > eps); they were counted as not adversarial: the attack has a bug"
            )
        queries = self.oracle.total - queries_before if self.oracle is not None else None
        return {"success": success, "distance": distance, "seconds": time.perf_counter() - start,
                "forwards": self.counting.forwards, "gradients": self.counting.gradients, "queries": queries,
                "warnings": warnings}

    def _attack(self, attack, xb, yb, tb, eps, generator) -> torch.Tensor:
        return attack.call(self.counting, xb, yb, eps=eps if math.isfinite(eps) else None, norm=self.norm.name,
                           bounds=self.bounds, target=tb, generator=generator)


def unit_result(base: torch.Tensor, active: torch.Tensor, run: dict, eps: float, width: float, *,
                minimal: bool, shared: bool) -> dict:
    """Per-sample robust vector (all N samples) and bookkeeping for one (attack, eps) result."""
    broken = run["success"] & within(run["distance"], eps, width) if minimal else run["success"]
    robust = base.clone()
    robust[active] = ~broken
    extra = {"attacked": int(len(active))}
    if run.get("queries") is not None:  # a black box: the queries its oracle answered, the checks included
        extra["queries"] = int(run["queries"])
    if minimal:
        extra["run_once"] = shared
        extra["distance"] = distance_stats(run["distance"][run["success"]])
    return {"robust": robust, "seconds": run["seconds"], "forwards": run["forwards"],
            "gradients": run["gradients"], "extra": extra, "warnings": run["warnings"]}


class ProgressBar:
    """A rich progress bar over (attack, eps, batch) steps, or nothing."""

    def __init__(self, enabled: bool, total: int):
        self.progress = self.task = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn())
            self.task = self.progress.add_task("evaluating", total=total)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.update(self.task, completed=self.progress.tasks[0].total)
            self.progress.stop()

    def describe(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, description=text)

    def advance(self, steps: int = 1) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, steps)


def run_each(runner: Runner, chosen, eps_values, clean, store) -> dict:
    """Every attack on every clean-correct sample; minimal attacks once (at the largest eps)."""
    units, everyone, bar = {}, torch.arange(len(clean)), runner.bar
    active = everyone[clean]
    per_unit = runner.batches(len(active))
    for a, attack in enumerate(chosen):
        todo = []
        for j in range(len(eps_values)):
            saved = store.get(a, j)
            if saved is None:
                todo.append(j)
            else:
                units[(a, j)] = saved
        if attack.minimal and todo:
            bar.describe(f"{attack.name} (minimal)")
            run = runner.run(a, attack, max(eps_values), active)
            for j, e in enumerate(eps_values):
                units[(a, j)] = unit_result(clean, active, run, e, runner.width, minimal=True, shared=True)
                store.put(a, j, units[(a, j)])
            store.save()
            continue
        bar.advance(per_unit * (1 if attack.minimal else len(eps_values) - len(todo)))
        for j in todo:
            bar.describe(f"{attack.name} eps={eps_values[j]:g}")
            run = runner.run(a, attack, eps_values[j], active)
            units[(a, j)] = unit_result(clean, active, run, eps_values[j], runner.width, minimal=False, shared=False)
            store.put(a, j, units[(a, j)])
            store.save()
    return units


def run_cascade(runner: Runner, chosen, eps_values, clean, store) -> dict:
    """At each eps, each attack only on the samples every earlier attack failed on."""
    units, everyone, bar = {}, torch.arange(len(clean)), runner.bar
    per_unit = runner.batches(int(clean.sum()))
    for j, e in enumerate(eps_values):
        still = clean
        for a, attack in enumerate(chosen):
            unit = store.get(a, j)
            if unit is None:
                bar.describe(f"{attack.name} eps={e:g} (cascade)")
                active = everyone[still]
                run = runner.run(a, attack, e, active)
                unit = unit_result(still, active, run, e, runner.width, minimal=attack.minimal, shared=False)
                store.put(a, j, unit)
                store.save()
                bar.advance(per_unit - runner.batches(len(active)))  # the bar counts full-size units
            else:
                bar.advance(per_unit)
            units[(a, j)] = unit
            still = unit["robust"]
    return units
