"""Figures for poisoning results: image grids (clean | poisoned) and rate curves, written atomically."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    from gibbon.zoo.io import write_png_atomic

    try:
        return write_png_atomic(path, fig)
    finally:
        _pyplot().close(fig)


def save_image_rows(path, rows: dict, *, labels: dict | None = None, columns: int = 8) -> Path:
    """One row of images per ``rows`` entry (name -> ``(B, C, H, W)`` tensor in [0, 1]), captions from ``labels``."""
    plt = _pyplot()
    names = list(rows)
    columns = min(columns, min(len(v) for v in rows.values()))
    fig, axes = plt.subplots(len(names), columns, figsize=(1.3 * columns, 1.45 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c in range(columns):
            image = rows[name][c].detach().float().cpu().clamp(0, 1).numpy()
            ax = axes[r][c]
            ax.imshow(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if labels and name in labels:
                ax.set_title(str(labels[name][c]), fontsize=7)
        axes[r][0].set_ylabel(name, fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))


def save_prediction_rows(path, model, rows: dict, *, labelled=None) -> Path:
    """:func:`save_image_rows` with the ``labelled`` rows (default: all) captioned by ``model``'s predictions."""
    from gibbon.zoo.training import predict_labels

    names = list(rows) if labelled is None else list(labelled)
    return save_image_rows(path, rows, labels={name: [f"pred {p}" for p in predict_labels(model, rows[name]).tolist()]
                                               for name in names})


def save_curve(path, x: list, series: dict, *, xlabel: str, ylabel: str, title: str, logx: bool = False) -> Path:
    """Lines ``series`` (name -> values over ``x``) on one axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, values in series.items():
        ax.plot(x, values, marker="o", label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path))
