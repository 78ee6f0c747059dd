"""The extraction figure: a copy's fidelity (and accuracy) against the queries it cost, written atomically."""

from __future__ import annotations

from pathlib import Path


def plot_curve(curves, path, *, title: str = "") -> Path:
    """Fidelity and accuracy vs queries (log x axis). ``curves``: one curve (a list of
    ``{"queries", "fidelity", "accuracy"}`` points, as :class:`~gibbon.extraction.knockoff.KnockoffResult`
    has) or a dict name -> curve to draw several on one figure."""
    from gibbon.poisoning.plots import _pyplot, _save

    named = curves if isinstance(curves, dict) else {"": curves}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, (name, points) in enumerate(named.items()):
        queries = [p["queries"] for p in points]
        for key, style in (("fidelity", "-o"), ("accuracy", ":s")):  # one colour per curve, one style per measure
            values = [p.get(key) for p in points]
            if any(v is not None for v in values):
                label = f"{name} {key}".strip()
                ax.plot(queries, [100 * v if v is not None else float("nan") for v in values], style, label=label,
                        markersize=4, color=f"C{i}")
    ax.set_xscale("log")
    ax.set_xlabel("queries to the victim")
    ax.set_ylabel("% of held-out images")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, Path(path))
