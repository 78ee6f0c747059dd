"""C&W L2, DeepFool L2, Square L-inf and APGD on MNIST: gibbon vs. its peers, side by side.

Every section runs gibbon and the peer libraries with the same model, images and settings,
interleaved in one process (``common.run_interleaved``: each repeat runs every contender once,
in a shuffled order), and reports median wall time, time / floor, gibbon's time / the peer's
time and the attack's strength. Images: the first ``--n`` (500) MNIST test images, batches of
250, ``--threads`` (2) torch threads. "Floor": ``k`` plain forward + backward passes (input
gradient of the cross-entropy) over the same batches (``common.floor``).

1. ``cw``: C&W L2 on the Madry CNN (``common.madry_cnn()``), untargeted, one binary-search step,
   c = 1, 100 Adam steps, lr 0.1, confidence 0 (BENCHMARKING.md's reference row). gibbon
   ``cw_l2`` with ``abort_early=True`` and with ``abort_early=False`` (and, with more than one
   search step, ``warm_start=False``: every round from the clean input, as the authors' code and
   Foolbox; gibbon's default starts a round after a success where that round ended; with one
   search step, ``const_raises=0``: no raise of c for a sample still failing on a flat loss in the
   last round, so a sample c = 1 leaves unbroken fails, as before that rule); torchattacks ``CW``;
   Foolbox ``L2CarliniWagnerAttack`` (abort_early); ART ``CarliniL2Method`` only with
   ``--with-art-cw`` (~20 min). Floor: 100 passes. ``--cw SEARCH,C0,STEPS,LR`` runs other
   settings (say ``5,0.01,200,0.05``, the budget of ``gibbon reproduce carlini2017-cw``); the
   floor is then SEARCH x STEPS passes, and torchattacks (no binary search) runs only with SEARCH 1.
2. ``deepfool``: DeepFool L2 on the Madry CNN, 50 steps, overshoot 0.02, 10 candidate classes.
   gibbon ``deepfool``; Foolbox ``L2DeepFoolAttack``; ART ``DeepFool`` (ignores the labels:
   attacks the predicted class); torchattacks ``DeepFool`` (one image at a time, so only on the
   first ``--torchattacks-deepfool-n`` (100) images: its time is scaled by n / 100 and marked
   "~"; the strength of every contender is also given on those same images). Floor: 50 passes.
3. ``square``: Square L-inf eps 0.3, 1,000 queries, p_init 0.8, margin loss, one restart, on the
   Madry CNN. gibbon ``square`` (through a counting ``Oracle``); torchattacks ``Square``; ART
   ``SquareAttack``. Queries per image: gibbon's oracle counts per image (mean and median); for
   the peers the model is wrapped in a module counting the images forwarded (all of them, the
   clean check included), divided by n (mean only). Floor: 40 passes, as BENCHMARKING.md's table.
4. ``apgd``: on the fast-adversarially-trained wong-net (``fast_mnist_model(seed=0)``), L-inf eps
   0.3, 100 steps, one restart: APGD-CE (gibbon ``apgd``, torchattacks ``APGD``, official
   AutoAttack ``pyautoattack.autopgd_base.APGDAttack``) and APGD-T, targeted DLR over 9 target
   classes (gibbon ``apgd_targeted``, torchattacks ``APGDT``, ``APGDAttack_targeted``).
   Floor: 100 passes (APGD-T: 900 = 9 x the measured 100-pass floor).

Strength. Minimal attacks (cw, deepfool): an image counts as a success when it was classified
correctly, its returned image is misclassified and differs from the clean one; success rate =
successes / correctly classified images, L2 mean / median over the successes, and the accuracy on
the scored images (where a library reports failure, returns non-finite values or leaves the box,
the clean image is put back first: Foolbox's C&W returns zeros where it fails). Budget attacks
(square, apgd): robust accuracy, each output checked in the eps-ball and the box
(``common.check_budget``).

Models: eval mode, parameters keep ``requires_grad=True`` (what a user hands to a library;
``--freeze-params`` turns it off), as ``common.py`` says.

    .venv/bin/python benchmarks/bench_minimal.py                              # all sections, 3 repeats
    .venv/bin/python benchmarks/bench_minimal.py --only cw,apgd --wait-quiet  # on a shared machine
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_minimal.py --n 20 --repeats 1 --threads 1 \\
        --json /tmp/bench_minimal_smoke.json                                  # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SECTIONS = ("cw", "deepfool", "square", "apgd")
EPS = 0.3  # square and apgd (L-inf)
CW = {"binary_search_steps": 1, "initial_const": 1.0, "steps": 100, "lr": 0.1, "confidence": 0.0}
DEEPFOOL = {"steps": 50, "overshoot": 0.02, "candidates": 10}
SQUARE = {"max_queries": 1000, "p_init": 0.8, "floor_steps": 40}
APGD = {"steps": 100, "restarts": 1, "n_target_classes": 9}
CLEAN_CPU_PER_WALL = 0.95  # with --wait-quiet: a run below 0.95 x threads CPU/wall is redone
WAIT_FOR_MODEL_S = 1800.0
TIE = 0.15  # BENCHMARKING.md: run-to-run spread is about 15%; smaller time gaps are ties
L2_SLACK = 0.02  # minimal attacks: gibbon's paired L2 may exceed a peer's by 2% and count as as strong


# --------------------------------------------------------------------------- small helpers


def _per_batch(attack_batch: Callable, x, y, batch_size=common.BATCH_SIZE) -> torch.Tensor:
    return torch.cat([attack_batch(xb, yb) for xb, yb in common.batches(x, y, batch_size)])


def _generator() -> torch.Generator:
    """A fresh stream per run, seeded from the global seed the runner sets before each run."""
    return torch.Generator().manual_seed(torch.initial_seed())


def _art_classifier(model, x):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                             nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")


def _art_run(attack, x, y=None) -> Callable[[], torch.Tensor]:
    x_np, y_np = x.numpy(), None if y is None else y.numpy()
    return lambda: torch.from_numpy(attack.generate(x=x_np, y=y_np))


def _foolbox_minimal(attack, model, x, y) -> Callable[[], torch.Tensor]:
    """A Foolbox minimisation attack; the clean image is put back where Foolbox reports failure
    (its C&W returns an all-zeros image there, which a plain check would count as a success)."""
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0.0, 1.0), device="cpu")

    def one(xb, yb):
        _raw, clipped, success = attack(fmodel, xb, yb, epsilons=None)
        return torch.where(success.view(-1, *[1] * (xb.ndim - 1)), clipped, xb)
    return lambda: _per_batch(one, x, y)


class CountingModel(torch.nn.Module):
    """Forwards to ``model`` and counts the images (rows) it was given: the queries of a peer."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return self.model(x)


@dataclass
class Row:
    """One contender and how to score it: on ``x[:n_images]``, its time scaled by ``time_scale``."""

    contender: common.Contender
    n_images: int
    time_scale: float = 1.0


def _row(name, run, library, n_images, time_scale=1.0, **meta) -> Row:
    return Row(common.Contender(name, run, {"library": library, "images": n_images, **meta}), n_images, time_scale)


# --------------------------------------------------------------------------- 1. C&W L2


def cw_rows(model, x, y, *, cw=CW, steps=None, with_art=False) -> list[Row]:
    """``cw``: the settings (``CW`` or ``--cw``'s); ``steps`` overrides ``cw["steps"]`` (warm-up).
    torchattacks' ``CW`` has no binary search over c, so it runs only with one search step."""
    import foolbox as fb
    import torchattacks

    from gibbon.attacks import cw_l2

    steps = cw["steps"] if steps is None else steps
    n, kw = len(x), dict(binary_search_steps=cw["binary_search_steps"], initial_const=cw["initial_const"],
                         steps=steps, lr=cw["lr"], confidence=cw["confidence"])

    def gibbon(abort_early, warm_start=True, const_raises=3):
        return lambda: _per_batch(lambda xb, yb: cw_l2(model, xb, yb, abort_early=abort_early, warm_start=warm_start,
                                                       const_raises=const_raises, **kw), x, y)

    fool = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=cw["binary_search_steps"], steps=steps,
                                            stepsize=cw["lr"], confidence=cw["confidence"],
                                            initial_const=cw["initial_const"], abort_early=True)
    rows = [_row("gibbon", gibbon(True), "gibbon", n, abort_early=True),
            _row("gibbon (abort_early=False)", gibbon(False), "gibbon", n, abort_early=False)]
    if cw["binary_search_steps"] > 1:  # every round from the clean input, as the authors' code and Foolbox
        rows.insert(1, _row("gibbon (warm_start=False)", gibbon(True, warm_start=False), "gibbon", n,
                            abort_early=True, warm_start=False))
    if cw["binary_search_steps"] == 1:  # the only round is the last: where the raise of c matters most
        rows.insert(1, _row("gibbon (const_raises=0)", gibbon(True, const_raises=0), "gibbon", n, abort_early=True,
                            const_raises=0))
        ta = torchattacks.CW(model, c=cw["initial_const"], kappa=cw["confidence"], steps=steps, lr=cw["lr"])
        rows.append(_row("torchattacks", lambda: _per_batch(ta, x, y), "torchattacks", n))
    rows.append(_row("foolbox", _foolbox_minimal(fool, model, x, y), "foolbox", n, abort_early=True))
    if with_art:
        from art.attacks.evasion import CarliniL2Method

        art = CarliniL2Method(_art_classifier(model, x), confidence=cw["confidence"], targeted=False,
                              learning_rate=cw["lr"], binary_search_steps=cw["binary_search_steps"],
                              max_iter=steps, initial_const=cw["initial_const"],
                              batch_size=common.BATCH_SIZE, verbose=False)
        rows.append(_row("art", _art_run(art, x, y), "art", n))
    return rows


# --------------------------------------------------------------------------- 2. DeepFool L2


def deepfool_rows(model, x, y, *, steps=DEEPFOOL["steps"], torchattacks_n=100) -> list[Row]:
    import foolbox as fb
    import torchattacks
    from art.attacks.evasion import DeepFool as ArtDeepFool

    from gibbon.attacks import deepfool

    n, k = len(x), min(torchattacks_n, len(x))
    kw = dict(steps=steps, overshoot=DEEPFOOL["overshoot"], candidates=DEEPFOOL["candidates"])
    fool = fb.attacks.L2DeepFoolAttack(steps=steps, candidates=DEEPFOOL["candidates"],
                                       overshoot=DEEPFOOL["overshoot"])
    art = ArtDeepFool(_art_classifier(model, x), max_iter=steps, epsilon=DEEPFOOL["overshoot"],
                      nb_grads=DEEPFOOL["candidates"], batch_size=common.BATCH_SIZE, verbose=False)
    ta = torchattacks.DeepFool(model, steps=steps, overshoot=DEEPFOOL["overshoot"])
    return [_row("gibbon", lambda: _per_batch(lambda xb, yb: deepfool(model, xb, yb, norm="l2", **kw), x, y),
                 "gibbon", n),
            _row("foolbox", _foolbox_minimal(fool, model, x, y), "foolbox", n),
            _row("art", _art_run(art, x), "art", n, note="ignores the labels"),
            _row(f"torchattacks (first {k} images)", lambda: _per_batch(ta, x[:k], y[:k]), "torchattacks", k,
                 time_scale=n / k, note=f"one image at a time; time x{n / k:g} extrapolated")]


# --------------------------------------------------------------------------- 3. Square L-inf


def square_rows(model, x, y, queries: dict, *, max_queries=SQUARE["max_queries"]) -> list[Row]:
    """``queries[name]`` receives, after each run, the per-image query counts (gibbon) or the mean."""
    import torchattacks
    from art.attacks.evasion import SquareAttack

    from gibbon.attacks import square
    from gibbon.oracles import Oracle

    n = len(x)

    def gibbon():
        g, counts = _generator(), []

        def one(xb, yb):
            oracle = Oracle(model, n=len(xb))
            x_adv = square(oracle, xb, yb, eps=EPS, norm="linf", max_queries=max_queries, p_init=SQUARE["p_init"],
                           loss="margin", generator=g)
            counts.append(oracle.queries.clone())
            return x_adv
        x_adv = _per_batch(one, x, y)
        queries["gibbon"] = torch.cat(counts).double()
        return x_adv

    def counted(name, counter, run):
        def go():
            counter.images = 0
            x_adv = run()
            queries[name] = counter.images / n
            return x_adv
        return go

    ta_model, art_model = CountingModel(model), CountingModel(model)
    ta = torchattacks.Square(ta_model, norm="Linf", eps=EPS, n_queries=max_queries, n_restarts=1,
                             p_init=SQUARE["p_init"], loss="margin", seed=0)
    art = SquareAttack(_art_classifier(art_model, x), norm=np.inf, eps=EPS, max_iter=max_queries,
                       p_init=SQUARE["p_init"], nb_restarts=1, batch_size=common.BATCH_SIZE, verbose=False)
    return [_row("gibbon", gibbon, "gibbon", n),
            _row("torchattacks", counted("torchattacks", ta_model, lambda: _per_batch(ta, x, y)), "torchattacks", n),
            _row("art", counted("art", art_model, _art_run(art, x, y)), "art", n)]


# --------------------------------------------------------------------------- 4. APGD


def apgd_rows(model, x, y, *, steps=APGD["steps"]) -> list[Row]:
    import torchattacks
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    from gibbon.attacks import apgd, apgd_targeted

    n, r, t = len(x), APGD["restarts"], APGD["n_target_classes"]

    def gibbon(fn, **kw):
        def run():
            g = _generator()
            return _per_batch(lambda xb, yb: fn(model, xb, yb, eps=EPS, norm="linf", steps=steps, restarts=r,
                                                generator=g, **kw), x, y)
        return run

    def official(attack):
        return lambda: _per_batch(lambda xb, yb: attack.perturb(xb, yb), x, y)

    ta_ce = torchattacks.APGD(model, norm="Linf", eps=EPS, steps=steps, n_restarts=r, loss="ce", seed=0)
    ta_t = torchattacks.APGDT(model, norm="Linf", eps=EPS, steps=steps, n_restarts=r, n_classes=t + 1, seed=0)
    aa_ce = APGDAttack(model, n_iter=steps, norm="Linf", n_restarts=r, eps=EPS, seed=0, loss="ce", device="cpu")
    aa_t = APGDAttack_targeted(model, n_iter=steps, norm="Linf", n_restarts=r, eps=EPS, seed=0,
                               n_target_classes=t, device="cpu")
    return [_row("gibbon apgd-ce", gibbon(apgd, loss="ce"), "gibbon", n, attack="apgd-ce"),
            _row("torchattacks apgd-ce", lambda: _per_batch(ta_ce, x, y), "torchattacks", n, attack="apgd-ce"),
            _row("autoattack apgd-ce", official(aa_ce), "autoattack", n, attack="apgd-ce"),
            _row("gibbon apgd-t", gibbon(apgd_targeted, n_target_classes=t), "gibbon", n, attack="apgd-t"),
            _row("torchattacks apgd-t", lambda: _per_batch(ta_t, x, y), "torchattacks", n, attack="apgd-t"),
            _row("autoattack apgd-t", official(aa_t), "autoattack", n, attack="apgd-t")]


# --------------------------------------------------------------------------- scoring


def predict(model, x) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(xb).argmax(1) for xb, _ in common.batches(x, x)])


def score_minimal(model, x, y, x_adv) -> dict:
    """Success (correct -> misclassified, image changed), L2 of the successes, and the accuracy on
    the scored images: the clean image is put back where the output is not finite, leaves the box
    or is no success."""
    flat = x_adv.flatten(1)
    valid = torch.isfinite(flat).all(1) & (flat >= -1e-6).all(1) & (flat <= 1 + 1e-6).all(1)
    x_adv = torch.where(valid.view(-1, *[1] * (x.ndim - 1)), x_adv, x)
    l2 = (x_adv - x).flatten(1).norm(dim=1)
    clean_ok = predict(model, x) == y
    success = clean_ok & (predict(model, x_adv) != y) & (l2 > 0)
    scored = torch.where(success.view(-1, *[1] * (x.ndim - 1)), x_adv, x)
    ls = l2[success]
    return {"success_rate": int(success.sum()) / max(1, int(clean_ok.sum())), "successes": int(success.sum()),
            "clean_correct": int(clean_ok.sum()), "invalid_outputs": int((~valid).sum()),
            "mean_l2": float(ls.mean()) if len(ls) else None, "median_l2": float(ls.median()) if len(ls) else None,
            "accuracy": common.accuracy(model, scored, y),
            "l2_per_image": [d if ok else None for d, ok in zip(l2.tolist(), success.tolist())]}


def score_budget(model, x, y, x_adv, queries=None) -> dict:
    """Robust accuracy, the eps-ball / box check and, for Square, the queries per image."""
    out = {"accuracy": common.accuracy(model, x_adv, y), **common.check_budget(x_adv, x, EPS)}
    if isinstance(queries, torch.Tensor):  # per image (gibbon's oracle)
        out.update(mean_queries=float(queries.mean()), median_queries=float(queries.median()))
    elif queries is not None:  # images forwarded / n (a counting wrapper)
        out.update(mean_queries=float(queries), median_queries=None)
    return out


def make_scorer(model, x, y, rows: list[Row], kind: str, details: dict, queries: dict) -> Callable:
    """``score(name, x_adv) -> (accuracy, budget)`` for ``run_interleaved``. All metrics go to
    ``details[name]`` (one dict per repeat); where some row ran on the first k < n images only,
    the full rows' metrics on those k images come along as ``first_k``."""
    n_of = {r.contender.name: r.n_images for r in rows}
    subset = min(n_of.values())

    def metrics(name, x_adv, k):
        if kind == "minimal":
            return score_minimal(model, x[:k], y[:k], x_adv[:k])
        return score_budget(model, x[:k], y[:k], x_adv[:k], queries.pop(name, None) if k == n_of[name] else None)

    def score(name, x_adv):
        k = n_of[name]
        m = metrics(name, x_adv, k)
        if subset < k:
            m["first_k"] = {"k": subset, **metrics(name, x_adv, subset)}
            m["first_k"].pop("l2_per_image", None)  # the first k entries of m's own list
        details.setdefault(name, []).append(m)
        if kind == "minimal":
            return m["accuracy"], {"max_linf": float((x_adv - x[:k]).abs().amax()), "ok": m["invalid_outputs"] == 0}
        return m["accuracy"], {"max_linf": m["max_linf"], "ok": m["ok"]}
    return score


# --------------------------------------------------------------------------- one section


@dataclass
class Section:
    key: str
    title: str
    kind: str  # "minimal" (cw, deepfool) or "budget" (square, apgd)
    floor_steps: int
    build: Callable  # (model, x, y, queries, warm) -> list[Row]; warm: a two-step version for the warm-up
    floor_multiples: dict | None = None  # attack -> multiple of the measured floor (APGD-T: 9)


def run_section(sec: Section, model, x, y, *, repeats, seed, quiet, threads, log) -> dict:
    log(f"\n== {sec.title}: {len(x)} images, batch {common.BATCH_SIZE}, {repeats} repeat(s) ==")
    clean = common.accuracy(model, x, y)
    log(f"clean accuracy {clean:.4f}")
    xw, yw = x[:8], y[:8]  # warm-up: every code path once (lazy imports, allocator, oneDNN kernels)
    common.floor(model, xw, yw, 2)
    for row in sec.build(model, xw, yw, {}, True):
        row.contender.run()
    queries: dict = {}
    rows = sec.build(model, x, y, queries, False)
    floor = common.Contender("floor", lambda: common.floor(model, x, y, sec.floor_steps),
                             {"library": "floor", "attack": f"{sec.floor_steps} fwd+bwd"})
    details: dict = {}
    score = make_scorer(model, x, y, rows, sec.kind, details, queries)
    t0 = time.perf_counter()
    timings = common.run_interleaved([floor, *[r.contender for r in rows]], repeats, score=score, seed=seed, log=log,
                                     quiet=quiet, min_cpu_per_wall=CLEAN_CPU_PER_WALL * threads if quiet else 0.0)
    result = summarize(sec, rows, timings, details, clean)
    result.update(n=len(x), repeats=repeats, wall_s=time.perf_counter() - t0)
    return result


# --------------------------------------------------------------------------- summary


def _scaled(t: common.Timing, factor: float) -> common.Timing:
    return common.Timing(t.name, seconds=[s * factor for s in t.seconds])


def _median_metrics(ms: list[dict]) -> dict:
    """Median over the repeats of each numeric metric (None where a metric was never defined)."""
    out = {}
    for key, value in (ms[0] if ms else {}).items():
        if isinstance(value, dict):
            out[key] = _median_metrics([m[key] for m in ms])
        elif isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
            vals = [m[key] for m in ms if m.get(key) is not None]
            out[key] = statistics.median(vals) if vals else None
    return out


def paired_l2(mine: list[dict], theirs: list[dict]) -> dict | None:
    """Median over the images both attacks solved (last repeat; image i of each) of gibbon's L2
    divided by the peer's: unlike medians over each one's own successes, it compares like with like."""
    if not mine or not theirs or "l2_per_image" not in mine[-1]:
        return None
    pairs = [(a / b) for a, b in zip(mine[-1]["l2_per_image"], theirs[-1]["l2_per_image"])
             if a is not None and b is not None and b > 0]
    return {"median_ratio": statistics.median(pairs), "images": len(pairs)} if pairs else None


def _gibbon_row(rows: list[Row], row: Row) -> Row | None:
    """gibbon's (first) row for the attack of ``row``: what 'gibbon / this' divides by."""
    attack = row.contender.meta.get("attack")
    return next((r for r in rows
                 if r.contender.meta["library"] == "gibbon" and r.contender.meta.get("attack") == attack), None)


def summarize(sec: Section, rows: list[Row], timings: dict, details: dict, clean: float) -> dict:
    """Per row: the timing, time over all n images (scaled for a subset row), ratios to the floor
    (times its multiple) and gibbon/this (both on all n images), the metrics and their medians."""
    fl = timings["floor"]
    entries = []
    for row in rows:
        name, t = row.contender.name, timings[row.contender.name]
        full = _scaled(t, row.time_scale)
        mult = (sec.floor_multiples or {}).get(row.contender.meta.get("attack"), 1)
        g = _gibbon_row(rows, row)
        entry = t.as_dict()
        entry.update(time_scale=row.time_scale, median_s_all_images=full.median, floor_multiple=mult,
                     vs_floor=common.ratio_stats(full, _scaled(fl, mult)),
                     gibbon_vs_this=None if g is None or g is row else common.ratio_stats(
                         _scaled(timings[g.contender.name], g.time_scale), full),
                     gibbon_l2_vs_this=None if g is None or g is row else paired_l2(
                         details.get(g.contender.name, []), details.get(name, [])),
                     cpu_per_wall_median=statistics.median(c / w for c, w in zip(t.cpu_seconds, t.seconds)),
                     metrics=details.get(name, []), metrics_median=_median_metrics(details.get(name, [])))
        entries.append(entry)
    return {"section": sec.key, "title": sec.title, "kind": sec.kind, "clean_accuracy": clean,
            "floor_steps": sec.floor_steps, "floor": fl.as_dict(), "rows": entries}


# --------------------------------------------------------------------------- report


def _f(v, fmt=".3f", none="–") -> str:
    return none if v is None else format(v, fmt)


def _spread(values: list[float], fmt=".3f") -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    mid = format(statistics.median(vals), fmt)
    return mid if min(vals) == max(vals) else f"{mid} ({min(vals):{fmt}}–{max(vals):{fmt}})"


def _time_cell(r: dict) -> str:
    cell = f"{r['median_s']:.2f} ({r['min_s']:.2f}–{r['max_s']:.2f})"
    return cell + (f" → ~{r['median_s_all_images']:.1f} for all" if r["time_scale"] != 1 else "")


def _strength_header(res: dict) -> tuple[str, str]:
    if res["kind"] == "minimal":
        return "success rate | mean L2 | median L2 | gibbon L2 / this (paired) | acc (scored)", "---|---|---|---|---"
    if res["section"] == "square":
        return "robust acc | max ‖δ‖∞ | queries/img mean | queries/img median", "---|---|---|---"
    return "robust acc | max ‖δ‖∞", "---|---"


def _strength_cells(res: dict, r: dict) -> str:
    ms, med = r["metrics"], r["metrics_median"]
    if res["kind"] == "minimal":
        pl = r["gibbon_l2_vs_this"]
        paired = "–" if pl is None else f"{pl['median_ratio']:.3f} [{pl['images']}]"
        return (f"{_spread([m['success_rate'] for m in ms])} | {_f(med.get('mean_l2'))} | {_f(med.get('median_l2'))} | "
                f"{paired} | {_spread([m['accuracy'] for m in ms])}")
    cells = f"{_spread([m['accuracy'] for m in ms])} | {_f(r['max_linf'], '.4f')}{'' if r['budget_ok'] else ' ✗'}"
    if res["section"] == "square":
        cells += f" | {_f(med.get('mean_queries'), '.1f')} | {_f(med.get('median_queries'), '.0f')}"
    return cells


def table(res: dict) -> str:
    head, rule = _strength_header(res)
    fl = res["floor"]
    lines = [f"**{res['title']}** ({res['n']} images, {res['repeats']} repeat(s); "
             f"clean accuracy {res['clean_accuracy']:.3f})",
             "", f"| library | median s (min–max) | × floor | gibbon / this | cpu/wall | {head} |",
             f"|---|---|---|---|---|{rule}|",
             f"| floor ({fl['attack']}) | {fl['median_s']:.2f} ({fl['min_s']:.2f}–{fl['max_s']:.2f}) | 1.00 | – | "
             f"{statistics.median(fl['cpu_per_wall']):.2f} |" + " – |" * (head.count("|") + 1)]
    for r in res["rows"]:
        gv = r["gibbon_vs_this"]
        floor_note = f" (of {r['floor_multiple']}× floor)" if r["floor_multiple"] != 1 else ""
        lines.append(f"| {r['name']} | {_time_cell(r)} | {r['vs_floor']['ratio_of_medians']:.2f}{floor_note} | "
                     f"{'–' if gv is None else format(gv['ratio_of_medians'], '.3f')} | "
                     f"{r['cpu_per_wall_median']:.2f} | {_strength_cells(res, r)} |")
    subset = [r for r in res["rows"] if r["metrics"] and "first_k" in r["metrics"][0]]
    if subset and res["kind"] == "minimal":
        k = subset[0]["metrics"][0]["first_k"]["k"]
        lines += ["", f"Strength on the first {k} images (where every contender ran):", "",
                  "| library | success rate | mean L2 | median L2 |", "|---|---|---|---|"]
        for r in res["rows"]:
            med = r["metrics_median"].get("first_k", r["metrics_median"])
            lines.append(f"| {r['name']} | {_f(med.get('success_rate'))} | {_f(med.get('mean_l2'))} | "
                         f"{_f(med.get('median_l2'))} |")
    return "\n".join(lines)


def verdicts(res: dict) -> list[str]:
    """One line per peer: gibbon's time ratio and whether gibbon is as strong: robust accuracy
    within 0.5 points; for minimal attacks success rate within 0.5 points on the same images and
    paired L2 at most 2% larger."""
    out = []
    for r in res["rows"]:
        gv = r["gibbon_vs_this"]
        if gv is None or r["library"] == "gibbon":
            continue
        med = r["metrics_median"]
        g = next(q for q in res["rows"] if q["library"] == "gibbon" and q.get("attack") == r.get("attack"))
        gm = g["metrics_median"]
        if res["kind"] == "minimal":  # a subset row is compared with gibbon on the same images
            mine, theirs = (gm.get("first_k", gm) if r["time_scale"] != 1 else gm), med
            pl = r["gibbon_l2_vs_this"]
            ok = (mine["success_rate"] >= theirs["success_rate"] - 0.005
                  and (pl is None or pl["median_ratio"] <= 1 + L2_SLACK))
            strength = (f"success {mine['success_rate']:.3f} vs {theirs['success_rate']:.3f}, median L2 "
                        f"{_f(mine.get('median_l2'))} vs {_f(theirs.get('median_l2'))}, paired L2 ratio "
                        f"{'–' if pl is None else format(pl['median_ratio'], '.3f')}")
        else:
            ok = gm["accuracy"] <= med["accuracy"] + 0.005
            strength = f"robust acc {gm['accuracy']:.3f} vs {med['accuracy']:.3f}"
        ratio = gv["ratio_of_medians"]
        speed = "tie, within 15%" if abs(ratio - 1) < TIE else ("faster" if ratio < 1 else "SLOWER")
        out.append(f"{res['section']}: {g['name']} / {r['name']}: time {ratio:.3f} ({speed}); {strength} "
                   f"({'as strong' if ok else 'WEAKER'})")
    return out


# --------------------------------------------------------------------------- models and sections


def fast_at_wong_net(freeze: bool, log, max_wait: float = WAIT_FOR_MODEL_S) -> torch.nn.Module:
    """``fast_mnist_model(seed=0)``, eval mode, parameters as ``common.py`` says. If the cache has
    no finished copy yet (another process may be training it), wait for it, then load it."""
    from gibbon.reproductions.reliable import fast_mnist_model, model_path

    path, t0 = model_path(0), time.perf_counter()
    if not (path.exists() and path.with_suffix(".json").exists()):
        log(f"  waiting (up to {max_wait:.0f} s) for the fast-AT wong-net at {path}")
        while not (path.exists() and path.with_suffix(".json").exists()) and time.perf_counter() - t0 < max_wait:
            time.sleep(10.0)
    model = fast_mnist_model(seed=0)  # trains only if it still is not there
    model.eval()
    for p in model.parameters():
        p.requires_grad_(not freeze)
    return model


def sections(args) -> dict[str, Section]:
    def cw(model, x, y, queries, warm):
        return cw_rows(model, x, y, cw=args.cw, steps=2 if warm else None, with_art=args.with_art_cw)

    def deepfool(model, x, y, queries, warm):
        return deepfool_rows(model, x, y, steps=2 if warm else DEEPFOOL["steps"],
                             torchattacks_n=args.torchattacks_deepfool_n)

    def square(model, x, y, queries, warm):
        return square_rows(model, x, y, queries, max_queries=5 if warm else SQUARE["max_queries"])

    def apgd(model, x, y, queries, warm):
        return apgd_rows(model, x, y, steps=2 if warm else APGD["steps"])

    s = SQUARE["floor_steps"]
    return {
        "cw": Section("cw", f"C&W L2 on the Madry CNN ({cw_title(args.cw)}, kappa 0)", "minimal",
                      args.cw["binary_search_steps"] * args.cw["steps"], cw),
        "deepfool": Section("deepfool", "DeepFool L2 on the Madry CNN (50 steps, overshoot 0.02, 10 candidates)",
                            "minimal", DEEPFOOL["steps"], deepfool),
        "square": Section("square", f"Square L∞ eps {EPS} on the Madry CNN (1,000 queries, p_init 0.8, margin loss; "
                          f"floor {s} passes as BENCHMARKING.md)", "budget", s, square),
        "apgd": Section("apgd", f"APGD-CE and APGD-T (9 targets) L∞ eps {EPS} on the fast-AT wong-net "
                        "(100 steps, 1 restart; APGD-T floor = 9 × the 100-pass floor)", "budget", APGD["steps"],
                        apgd, floor_multiples={"apgd-t": APGD["n_target_classes"]}),
    }


def parse_cw(text: str) -> dict:
    """``"SEARCH,C0,STEPS,LR"`` -> a settings dict like ``CW``."""
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"expected SEARCH,C0,STEPS,LR (4 numbers), got {text!r}")
    search, steps = int(parts[0]), int(parts[2])
    const, lr = float(parts[1]), float(parts[3])
    if search < 1 or steps < 1 or const <= 0 or lr <= 0:
        raise ValueError(f"SEARCH and STEPS must be >= 1 and C0, LR > 0, got {text!r}")
    return {**CW, "binary_search_steps": search, "initial_const": const, "steps": steps, "lr": lr}


def cw_title(cw: dict) -> str:
    search = "1 binary-search step" if cw["binary_search_steps"] == 1 else f"{cw['binary_search_steps']} binary-search steps"
    return f"{search}, c = {cw['initial_const']:g}, {cw['steps']} steps, lr {cw['lr']:g}"


def settings(args) -> dict:
    return {"n": args.n, "batch_size": common.BATCH_SIZE, "threads": args.threads, "repeats": args.repeats,
            "seed": args.seed, "only": args.only, "with_art_cw": args.with_art_cw, "freeze_params": args.freeze_params,
            "wait_quiet": args.wait_quiet, "torchattacks_deepfool_n": args.torchattacks_deepfool_n, "cw": args.cw,
            "deepfool": DEEPFOOL, "square": {**SQUARE, "eps": EPS, "norm": "linf", "restarts": 1, "loss": "margin"},
            "apgd": {**APGD, "eps": EPS, "norm": "linf", "loss_ce": "ce", "loss_t": "targeted dlr"}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of sections ({', '.join(SECTIONS)})")
    p.add_argument("--n", type=int, default=500, help="first N MNIST test images (default 500)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
    p.add_argument("--threads", type=int, default=common.THREADS, help="torch threads (default 2)")
    p.add_argument("--seed", type=int, default=0, help="order shuffling and random starts")
    p.add_argument("--with-art-cw", action="store_true", help="also ART's CarliniL2Method (about 20 min per run)")
    p.add_argument("--torchattacks-deepfool-n", type=int, default=100,
                   help="images for torchattacks' one-at-a-time DeepFool (its time is scaled to all N)")
    p.add_argument("--freeze-params", action="store_true", help="requires_grad=False on the models' parameters")
    p.add_argument("--wait-quiet", action="store_true",
                   help="wait for other processes to leave the cores before each run and redo contended runs "
                        f"(CPU/wall < {CLEAN_CPU_PER_WALL} x threads)")
    p.add_argument("--cw", default=None, metavar="SEARCH,C0,STEPS,LR",
                   help="C&W settings instead of the reference row's 1,1,100,0.1: binary-search steps, initial c, "
                        "Adam steps per search step, lr (e.g. 5,0.01,200,0.05: the reproduction's budget; "
                        "floor = SEARCH x STEPS passes; torchattacks, which has no binary search, runs only "
                        "with SEARCH 1)")
    p.add_argument("--json", type=Path, default=Path("benchmarks/results/bench_minimal.json"))
    args = p.parse_args(argv)
    try:
        args.cw = CW if args.cw is None else parse_cw(args.cw)
    except ValueError as e:
        p.error(f"--cw: {e}")
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set(SECTIONS))
    if unknown:
        p.error(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    common.set_threads(args.threads)
    warnings.filterwarnings("ignore")

    def log(msg):
        print(msg, flush=True)

    start = time.perf_counter()
    info = common.machine_info()
    log(f"machine: {info['cpu']}, {info['cpu_count']} cpus, torch {info['torch_threads']} threads; "
        f"versions {info['versions']}")
    x, y = common.mnist_test(args.n)
    cnn = common.madry_cnn(freeze=args.freeze_params) if set(args.only) & {"cw", "deepfool", "square"} else None
    results, lines = [], []
    for key in args.only:
        sec = sections(args)[key]
        model = fast_at_wong_net(args.freeze_params, log) if key == "apgd" else cnn
        res = run_section(sec, model, x, y, repeats=args.repeats, seed=args.seed, quiet=args.wait_quiet,
                          threads=args.threads, log=log)
        res.update(table_markdown=table(res), verdicts=verdicts(res))
        results.append(res)
        log("\n" + res["table_markdown"] + "\n")
        lines += res["verdicts"]
    log("\n".join(lines))
    wall = time.perf_counter() - start
    log(f"\ntotal wall time {wall:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"benchmark": __doc__.split("\n")[0], "settings": settings(args), "machine": info,
                                     "results": results, "verdicts": lines, "wall_s": wall}, indent=2, default=str))
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
