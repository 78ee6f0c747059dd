"""The images one-step C&W leaves unsolved at c = 1, and what Foolbox and gibbon solve them with.

Runs C&W L2 as ``bench_minimal.py`` does (one binary-search step, c = 1, 100 Adam steps, lr
0.1) on the first ``--n`` MNIST test images against the Madry CNN with ``const_raises=0`` (c
stays 1), keeps the correctly classified images it does not fool, and on those prints Foolbox's
result at the same settings (success and L2, checked against the model), gibbon's with c = 10
and gibbon's default (``const_raises=3``: c raised tenfold where the loss goes flat, same 100 steps).

    .venv/bin/python benchmarks/cw_failures.py --n 500
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    common.set_threads(args.threads)
    import foolbox as fb

    from gibbon.attacks import cw_l2

    model = common.madry_cnn()
    x, y = common.mnist_test(args.n)
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    settings = dict(binary_search_steps=1, initial_const=1.0, steps=100, lr=0.1)
    x_adv = torch.cat([cw_l2(model, xb, yb, const_raises=0, **settings) for xb, yb in zip(x.split(250), y.split(250))])
    with torch.no_grad():
        failed = model(x_adv).argmax(1) == y
    xf, yf = x[failed], y[failed]
    print(f"gibbon C&W (c = 1, const_raises=0) leaves {len(yf)} of {len(y)} correctly classified images unsolved")
    attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=1, steps=100, stepsize=0.1, initial_const=1.0)
    raw, _, _ = attack(fb.PyTorchModel(model, bounds=(0, 1)), xf, yf, epsilons=None)
    with torch.no_grad():
        fooled = model(raw).argmax(1) != yf
    dist = (raw - xf).flatten(1).norm(dim=1)[fooled]
    print(f"Foolbox, same settings: fools {int(fooled.sum())} of them, L2 min {dist.min():.2f} median "
          f"{dist.median():.2f} max {dist.max():.2f}")
    for label, kw in (("c = 10, const_raises=0", {"initial_const": 10.0, "const_raises": 0}),
                      ("c = 1, const_raises=3 (default)", {})):
        xg = cw_l2(model, xf, yf, **{**settings, **kw})
        with torch.no_grad():
            ok = model(xg).argmax(1) != yf
        d = (xg - xf).flatten(1).norm(dim=1)[ok]
        print(f"gibbon with {label}: fools {int(ok.sum())} of them, L2 mean {d.mean():.2f} min {d.min():.2f} "
              f"max {d.max():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
