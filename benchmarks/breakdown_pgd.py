"""Per-step cost of the pieces of gibbon's PGD loop (``gibbon.attacks._loop.ascend``) beyond the
forward+backward, on one batch of 250 MNIST images, and CPU time of whole attacks.

    .venv/bin/python benchmarks/breakdown_pgd.py [--threads 1] [--model wong|cnn]

Uses this process's CPU time (``time.process_time``), which another process on the machine
inflates far less than wall time when --threads 1 (the default here).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

EPS, STEP = 0.3, 0.01


def cpu_time(f, reps: int, rounds: int = 7) -> float:
    """Median over ``rounds`` of the CPU seconds per call of ``f`` (``reps`` calls per round)."""
    out = []
    for _ in range(rounds):
        c0 = time.process_time()
        for _ in range(reps):
            f()
        out.append((time.process_time() - c0) / reps)
    return statistics.median(out)


def lean_pgd(model, x, y, *, eps, steps, step_size, generator, bounds=(0.0, 1.0)):
    """A prototype of a leaner L-inf loop with gibbon's semantics (uniform random start, best
    iterate per sample, the last iterate scored): the eps-ball intersected with the box is a box
    for L-inf, so it is computed once and each step projects with ONE clamp; the step is one
    fused ``add(alpha=)``; no ``1.0 * grad``; no per-step eps tensor; no ``x + delta`` rebuild."""
    from gibbon.core.goals import is_adversarial
    from gibbon.core.losses import cross_entropy

    lo = (x - eps).clamp_(min=bounds[0])
    hi = (x + eps).clamp_(max=bounds[1])
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).mul_(2 * eps).sub_(eps)
    x_adv = torch.clamp(x + noise, lo, hi)
    best = x.clone()
    best_success = torch.zeros(len(x), dtype=torch.bool)
    best_obj = torch.full((len(x),), float("-inf"))
    for step in range(steps + 1):
        if step < steps:
            xv = x_adv.requires_grad_(True)
            with torch.enable_grad():
                logits = model(xv)
                values = cross_entropy(logits, y)
                (grad,) = torch.autograd.grad(values.sum(), xv)
            x_adv, logits, values = x_adv.detach(), logits.detach(), values.detach()
        else:
            with torch.no_grad():
                logits = model(x_adv)
                values = cross_entropy(logits, y)
        success = is_adversarial(logits, y)
        better = (success & ~best_success) | ((success == best_success) & (values > best_obj))
        chosen = better.nonzero().squeeze(1)
        best.index_copy_(0, chosen, x_adv.index_select(0, chosen))
        best_success |= success
        best_obj = torch.where(better, values, best_obj)
        if step < steps:
            x_adv = torch.clamp(torch.add(x_adv, grad.sign_(), alpha=step_size), lo, hi)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", choices=("cnn", "wong"), default="wong")
    p.add_argument("--reps", type=int, default=200)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import torchattacks
    from gibbon.attacks import _common, _loop, pgd
    from gibbon.core import losses, norms
    from gibbon.core.goals import is_adversarial

    model = common.madry_cnn() if args.model == "cnn" else common.adv_trained_wong_net(progress=False)
    x, y = common.mnist_test(250)
    linf = norms.get_norm("linf")
    g = torch.Generator().manual_seed(0)
    delta = linf.sample(x, EPS, g)
    delta = (x + delta).clamp(0, 1) - x
    x_cur = x + delta
    grad, logits, values = _common.input_gradient(model, x_cur, y, "ce")
    best = _loop.Best.start(x)
    idx = torch.arange(250)
    half = torch.zeros(250, dtype=torch.bool)
    half[::2] = True

    def floor_step():
        xv = x_cur.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xv), y, reduction="sum")
        torch.autograd.grad(loss, xv)

    def fwd_only():
        with torch.no_grad():
            losses.cross_entropy(model(x_cur), y)

    def offer():
        best.offer(idx, x_cur, half, values)

    def update():  # what ascend does after the gradient for one step (linf, untargeted, no momentum)
        direction = 1.0 * grad
        return _common.project_in_box(x, delta + _common.scale(linf.ascent(direction), STEP), linf, EPS, (0.0, 1.0))

    lo, hi = (x - EPS).clamp(min=0), (x + EPS).clamp(max=1)

    def lean_update():
        return torch.clamp(torch.add(x_cur, grad.sign(), alpha=STEP), lo, hi)

    def ta_update():  # torchattacks' update
        adv = x_cur.detach() + STEP * grad.sign()
        d = torch.clamp(adv - x, min=-EPS, max=EPS)
        return torch.clamp(x + d, min=0, max=1).detach()

    items = {
        "fwd+bwd (floor step)": floor_step,
        "input_gradient (gibbon)": lambda: _common.input_gradient(model, x_cur, y, "ce"),
        "forward only (last iterate)": fwd_only,
        "x + delta": lambda: x + delta,
        "is_adversarial": lambda: is_adversarial(logits, y),
        "Best.offer (half the batch improves)": offer,
        "update + project_in_box (gibbon)": update,
        "update + clamp (torchattacks)": ta_update,
        "update + one clamp to a precomputed box": lean_update,
        "prepare() input checks": lambda: _common.prepare(x, y, eps=EPS, bounds=(0.0, 1.0), target=None,
                                                          norm_name="linf", allowed_norms=("linf",)),
    }
    print(f"model {args.model}, batch 250, {args.threads} thread(s); CPU ms per call (median of 7 rounds)")
    res = {}
    for name, f in items.items():
        f()
        heavy = "fwd" in name or "gradient" in name or "forward" in name
        res[name] = cpu_time(f, max(5, args.reps // (10 if heavy and args.model == "cnn" else 1)))
        print(f"  {name:<40s} {1e3 * res[name]:8.3f} ms")
    per_step_extra = (res["x + delta"] + res["is_adversarial"] + res["Best.offer (half the batch improves)"]
                      + res["update + project_in_box (gibbon)"] + res["input_gradient (gibbon)"] - res["fwd+bwd (floor step)"])
    ta_extra = res["update + clamp (torchattacks)"]
    fs = res["fwd+bwd (floor step)"]
    print(f"\ngibbon per-step work beyond the floor step: {1e3 * per_step_extra:.3f} ms "
          f"({100 * per_step_extra / fs:.1f}% of a fwd+bwd); torchattacks: {1e3 * ta_extra:.3f} ms "
          f"({100 * ta_extra / fs:.1f}%)")
    print(f"gibbon per-call extras: last-iterate forward {1e3 * res['forward only (last iterate)']:.3f} ms "
          f"= {100 * res['forward only (last iterate)'] / (40 * fs):.1f}% of 40 fwd+bwd; "
          f"input checks {1e3 * res['prepare() input checks']:.3f} ms")

    ta = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=40, random_start=True)
    whole = {
        "floor (40 fwd+bwd)": lambda: [floor_step() for _ in range(40)],
        "gibbon pgd-40": lambda: pgd(model, x, y, eps=EPS, steps=40, step_size=STEP),
        "torchattacks pgd-40": lambda: ta(x, y),
        "lean prototype pgd-40": lambda: lean_pgd(model, x, y, eps=EPS, steps=40, step_size=STEP,
                                                  generator=torch.Generator().manual_seed(0)),
    }
    print("\nwhole attacks on the batch, CPU s (median of 7):")
    w = {k: cpu_time(f, 1) for k, f in whole.items()}
    for k, v in w.items():
        print(f"  {k:<22s} {v:7.4f} s  x floor {v / w['floor (40 fwd+bwd)']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
