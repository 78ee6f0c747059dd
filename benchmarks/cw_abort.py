"""What C&W L2's early abort buys and costs, in the benchmark's setting (Madry CNN, MNIST).

``bench_minimal.py``'s C&W row (one binary-search step, c = 1, 100 Adam steps, lr 0.1) asks
for Foolbox's strength in half Foolbox's time. Time there is proportional to the rows the
model is run on, so the question is how many of the 100 steps per image an abort rule can
skip, and at what cost in L2.

This script runs gibbon's ``cw_l2`` once with ``abort_early=False`` on the first ``--n`` test
images, recording every iterate through a model wrapper (the wrapper sees each step's
``x_new``, so the trace comes from the library's own code), with ``const_raises=0``: c stays 1,
so the rules replay the attack as it ran before the last round raised c for failing samples.
Adam's update is per sample and the model is in eval mode, so a sample's trajectory does not
depend on which other samples are still in the batch: every abort rule can be replayed exactly from the one trace. For each rule
it prints the fraction of the 100 steps run (the time relative to running them all), the
success rate over the correctly classified images, the mean / median L2 of the best successful
iterate and the step at which the no-abort run found its best iterate.

Rules: ``none``; ``per-sample`` (gibbon: a sample stops once its loss fell by < 0.01% over
``steps // 10`` steps); ``whole-batch`` (the authors' code and Foolbox: the batch stops once the
summed loss fell by < 0.01%); ``per-sample+stalled`` (also stop a solved sample once its best
distance improved by < ``tol`` over the last window).

    .venv/bin/python benchmarks/cw_abort.py --n 500
"""

from __future__ import annotations

import argparse

import torch

SETTING = {"binary_search_steps": 1, "initial_const": 1.0, "steps": 100, "lr": 0.1, "confidence": 0.0}
BATCH = 250


class _Recorder(torch.nn.Module):
    """Passes through ``model`` and keeps each call's input and logits (one call = one Adam step)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.inputs, self.logits = model, [], []

    def forward(self, x):
        logits = self.model(x)
        self.inputs.append(x.detach())
        self.logits.append(logits.detach())
        return logits


def trace(model, x, y):
    """Per-sample loss, squared distance and success at every step: ``(n, steps)`` tensors."""
    from gibbon.attacks import cw_l2
    from gibbon.attacks.cw import _goal_reached, cw_margin

    losses, dists, wins = [], [], []
    for start in range(0, len(x), BATCH):
        xb, yb = x[start:start + BATCH], y[start:start + BATCH]
        rec = _Recorder(model)
        cw_l2(rec, xb, yb, abort_early=False, const_raises=0, **SETTING)  # c stays 1: the loss below uses it
        assert len(rec.inputs) == SETTING["steps"], "cw_l2 without abort runs the model once per step"
        steps = list(zip(rec.inputs, rec.logits))
        d = torch.stack([(xi - xb).pow(2).flatten(1).sum(1) for xi, _ in steps], 1)
        m = torch.stack([-SETTING["initial_const"] * cw_margin(zi, yb, 0.0) for _, zi in steps], 1)
        losses.append(d + m)
        dists.append(d)
        wins.append(torch.stack([_goal_reached(zi, yb, None, 0.0) for _, zi in steps], 1))
    return torch.cat(losses).double(), torch.cat(dists).double(), torch.cat(wins)


def replay(losses, dists, wins, rule: str, tol: float = 1e-2):
    """Steps run per sample under ``rule`` and the best successful squared distance within them."""
    n, steps = losses.shape
    check = max(steps // 10, 1)
    run = torch.full((n,), steps)
    alive = torch.ones(n, dtype=torch.bool)
    prev = torch.full((n,), float("inf"), dtype=torch.double)
    prev_total = float("inf")
    inf = torch.tensor(float("inf"), dtype=torch.double)
    successful = torch.where(wins, dists, inf)
    for t in range(check, steps + 1, check):
        loss = losses[:, t - 1]
        if rule == "none":
            keep = alive
        elif rule == "whole-batch":
            total = float(loss.sum())
            keep = alive & torch.tensor(total <= prev_total * 0.9999)
            prev_total = total
        else:
            keep = alive & (loss <= prev * 0.9999)
            if rule == "per-sample+stalled" and t > check:
                now, before = successful[:, :t].min(1).values, successful[:, :t - check].min(1).values
                keep &= ~(torch.isfinite(now) & (now > before * (1 - tol)))
        run[alive & ~keep] = t
        alive = keep
        prev = torch.where(alive, loss, prev)
    within = torch.arange(steps)[None, :] < run[:, None]
    return run, torch.where(within, successful, inf).min(1).values


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-2, help="per-sample+stalled: best-distance tolerance")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import common
    from gibbon import data as gdata

    model = common.madry_cnn()
    test = gdata.load("mnist", "test", n=args.n)
    with torch.no_grad():
        correct = model(test.x).argmax(1) == test.y
    losses, dists, wins = trace(model, test.x, test.y)
    first_best = torch.where(wins, dists, torch.tensor(float("inf"), dtype=torch.double)).argmin(1) + 1
    solved_any = wins.any(1) & correct
    q = first_best[solved_any].float().quantile(torch.tensor([0.25, 0.5, 0.75]))
    print(f"C&W L2 {SETTING}, Madry CNN, first {args.n} test images ({int(correct.sum())} correct)")
    print(f"no-abort run: step of the best iterate, quartiles {q[0]:.0f} / {q[1]:.0f} / {q[2]:.0f}")
    print(f"{'rule':<22} {'steps run':>9} {'success':>8} {'mean L2':>8} {'median L2':>9}")
    for rule in ("none", "whole-batch", "per-sample", "per-sample+stalled"):
        run, best = replay(losses, dists, wins, rule, args.tol)
        ok = torch.isfinite(best) & correct
        l2 = best[ok].sqrt()
        print(f"{rule:<22} {float(run[correct].float().mean()) / losses.shape[1]:>9.3f} "
              f"{float(ok.sum() / correct.sum()):>8.1%} {float(l2.mean()):>8.4f} {float(l2.median()):>9.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
