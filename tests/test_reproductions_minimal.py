"""Minimal-perturbation and few-pixel attack reproductions (slow ones train LeNet-5 / FC 500-150 on MNIST)."""

from __future__ import annotations

from gibbon.reproductions import minimal_attacks

IDS = ["moosavi2016-deepfool", "carlini2017-cw", "carlini2017-cw-paper-net", "papernot2016-jsma", "su2019-onepixel"]


def test_targets_are_listed_with_a_citation():
    targets = minimal_attacks.targets()
    assert [t.id for t in targets] == IDS
    for target in targets:
        assert target.run.__doc__ and "arXiv" in target.run.__doc__
        assert target.paper and target.claim


def test_cw_rows_hold_the_best_case_to_two_and_the_average_case_only_when_asked():
    import torch

    inf = float("inf")
    # two images x 9 targets: the easiest targets cost 1.0 and 1.5 (best case 1.25), the average
    # over all hits is larger than 2, and the second image misses one target (no worst case for it)
    dist = torch.tensor([[1.0] + [2.5] * 8, [1.5, inf] + [3.0] * 7])
    hit = dist.isfinite()
    rows = {r["quantity"].split(" (")[0]: r for r in minimal_attacks._cw_targeted_rows(hit, dist, average_target=None)}
    assert abs(rows["C&W L2 targeted success"]["ours"] - 17 / 18) < 1e-6 and not rows["C&W L2 targeted success"]["ok"]
    best = rows["C&W L2 targeted best case mean L2"]
    assert best["ours"] == 1.25 and best["ok"] and best["target"] == "<= 2.0"
    average = rows["C&W L2 targeted average case mean L2"]
    assert abs(average["ours"] - float(dist[hit].mean())) < 1e-6 and average["target"] == "record" and average["ok"]
    assert rows["C&W L2 targeted worst case mean L2"]["ours"] == 2.5  # only the first image hit all 9

    held = minimal_attacks._cw_targeted_rows(hit, dist, average_target=2.0)
    assert [r["ok"] for r in held if r["quantity"].startswith("C&W L2 targeted average")] == [False]
    harder = minimal_attacks._cw_targeted_rows(hit, dist + 1.0, average_target=None)
    assert not next(r for r in harder if "best case" in r["quantity"])["ok"]  # best case 2.25 > 2.0
