"""gibbon's epsilon (Opacus's accountants) against Google's dp-accounting, the library behind
TF-privacy's ``compute_dp_sgd_privacy``, on Abadi et al. 2016's MNIST settings and TF-privacy's
tutorial settings.

dp-accounting is not a gibbon dependency (it pins attrs < 24 and dm-tree); install it beside
the project, not into it:

    .venv/bin/pip install -q --target /tmp/dpa_site --no-deps dp-accounting==0.6.0 attrs==23.2.0 \\
        absl-py dm-tree==0.1.8
    PYTHONPATH=/tmp/dpa_site .venv/bin/python benchmarks/accountants.py [--json out.json]

Every setting is Poisson-sampled Gaussian DP-SGD (add-or-remove-one neighbours) at delta 1e-5.
Columns: RDP (Opacus, through :func:`gibbon.defenses.dp_sgd.privacy_spent`) vs RDP
(dp-accounting with TF-privacy's order list), and PRV (Opacus) vs PLD (dp-accounting). The two
RDP columns must agree to 2 decimals; PRV and PLD are two numerical methods for the same exact
privacy curve and agree to their discretisation error.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys

from gibbon.defenses.dp_sgd import privacy_spent

DELTA = 1e-5
# TF-privacy's compute_dp_sgd_privacy_lib order list
TF_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512]

#: (label, sample rate q, noise multiplier sigma, steps)
SETTINGS = [
    # Abadi et al. 2016 (arXiv:1607.00133), section 3.1 and figure 3: lots of 600 of 60,000 (q = 0.01)
    ("Abadi 3.1: sigma 4, E=100 (paper: 1.26, moments accountant)", 0.01, 4.0, 10_000),
    ("Abadi small noise sigma 2, E=10", 0.01, 2.0, 1_000),
    ("Abadi small noise sigma 2, E=100", 0.01, 2.0, 10_000),
    ("Abadi medium noise sigma 4, E=10", 0.01, 4.0, 1_000),
    ("Abadi medium noise sigma 4, E=400", 0.01, 4.0, 40_000),
    ("Abadi large noise sigma 8, E=100", 0.01, 8.0, 10_000),
    ("Abadi large noise sigma 8, E=700", 0.01, 8.0, 70_000),
    # TF-privacy's MNIST tutorial: batch 256 of 60,000
    ("TF-privacy tutorial sigma 1.1, 15 epochs", 256 / 60_000, 1.1, math.ceil(15 * 60_000 / 256)),
    ("TF-privacy tutorial sigma 1.1, 60 epochs", 256 / 60_000, 1.1, math.ceil(60 * 60_000 / 256)),
    ("TF-privacy tutorial sigma 0.7, 45 epochs", 256 / 60_000, 0.7, math.ceil(45 * 60_000 / 256)),
]


def dp_accounting_epsilons(q: float, sigma: float, steps: int) -> tuple[float, float]:
    import dp_accounting
    from dp_accounting import pld, rdp

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
    rdp_acc = rdp.RdpAccountant(orders=TF_ORDERS)
    rdp_acc.compose(event)
    pld_acc = pld.PLDAccountant()
    pld_acc.compose(event)
    return float(rdp_acc.get_epsilon(DELTA)), float(pld_acc.get_epsilon(DELTA))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the table here")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("dp_accounting") is None:
        print("dp-accounting is not importable; see this script's docstring for the install line", file=sys.stderr)
        return 2
    rows, worst = [], 0.0
    print(f"{'setting':58s} {'q':>8s} {'sigma':>5s} {'steps':>6s} | {'RDP ours':>8s} {'RDP TF':>8s} | "
          f"{'PRV ours':>8s} {'PLD TF':>8s}")
    for label, q, sigma, steps in SETTINGS:
        ours_rdp, ours_prv = privacy_spent(sigma, q, steps, DELTA, "rdp"), privacy_spent(sigma, q, steps, DELTA, "prv")
        tf_rdp, tf_pld = dp_accounting_epsilons(q, sigma, steps)
        worst = max(worst, abs(round(ours_rdp, 2) - round(tf_rdp, 2)))
        rows.append({"setting": label, "q": q, "sigma": sigma, "steps": steps, "delta": DELTA, "rdp_opacus": ours_rdp,
                     "rdp_dp_accounting": tf_rdp, "prv_opacus": ours_prv, "pld_dp_accounting": tf_pld})
        print(f"{label:58s} {q:8.5f} {sigma:5.1f} {steps:6d} | {ours_rdp:8.4f} {tf_rdp:8.4f} | {ours_prv:8.4f} "
              f"{tf_pld:8.4f}")
    print(f"largest RDP difference after rounding to 2 decimals: {worst:.2f}")
    if args.json:
        from gibbon.evaluation.report import write_json_atomic

        write_json_atomic(args.json, {"delta": DELTA, "rows": rows, "max_rdp_difference_2dp": worst})
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
