"""The fast-AT reliable-evaluation reproduction (slow part trains on real MNIST: `-m slow`)."""

from __future__ import annotations

import pytest

from gibbon.reproductions import reliable


def test_targets_list_the_cited_reproduction():
    found = {t.id: t for t in reliable.targets()}
    assert "wong2020-fast-reliable" in found
    doc = found["wong2020-fast-reliable"].run.__doc__
    assert doc and "arXiv:2001.03994" in doc and "arXiv:2003.01690" in doc and "arXiv:1706.06083" in doc


@pytest.mark.slow
def test_fast_reliable_reproduction_meets_its_targets():
    (target,) = [t for t in reliable.targets() if t.id == "wong2020-fast-reliable"]
    rows = target.run(seed=0, device="cpu")
    failed = [r for r in rows if not r["ok"]]
    assert rows and not failed, f"rows that missed their target: {failed}; all: {rows}"
