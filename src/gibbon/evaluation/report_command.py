"""``gibbon report RESULTS... -o report/``: one self-contained HTML page from result files.

Reads the JSON that ``gibbon evaluate``, ``diagnose``, ``privacy mia`` and ``transfer`` write, and the
``.npz`` of ``gibbon attack --out``; writes ``OUT/index.html`` atomically (see
:mod:`gibbon.evaluation.html_report` for what the page holds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from gibbon.core.checks import GibbonInputError

NPZ_KEYS = ("x", "x_adv", "y", "pred_adv", "success", "distance", "target", "settings")


def load_result(path: Path):
    """A result file as a dict: parsed JSON, or the arrays of an ``.npz`` (never unpickled).

    Raises:
        GibbonInputError: missing, unreadable or not JSON / npz (one line naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise GibbonInputError(f"{path}: no such file; pass result files written by gibbon (JSON or attack .npz)")
    if path.suffix == ".npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as arrays:
                return {k: arrays[k] for k in arrays.files if k in NPZ_KEYS}
        except (ValueError, OSError) as err:
            raise GibbonInputError(f"{path}: not a readable npz ({err})") from None
    try:
        with open(path, encoding="utf-8") as f:
            result = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GibbonInputError(f"{path}: not JSON ({err}); pass result files written by gibbon") from None
    if not isinstance(result, dict):
        raise GibbonInputError(f"{path}: not a gibbon result (a JSON object was expected)")
    return result


def write_report(results: List[Path], out_dir: Path) -> Path:
    """Load, check and render ``results``; write ``out_dir/index.html`` atomically and return its path."""
    from gibbon._version import __version__
    from gibbon.evaluation.html_report import build_page, detect_kind
    from gibbon.zoo.io import _atomic_write

    if not results:
        raise GibbonInputError("pass at least one result file (e.g. gibbon report results/eval.json -o report/)")
    named = [(Path(p).name, load_result(p)) for p in results]
    for (_, result), path in zip(named, results):
        detect_kind(result, str(path))  # every file checked before anything is drawn
    page = build_page(named, version=__version__)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "index.html"
    _atomic_write(target, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return target


def report(
    results: List[Path] = typer.Argument(..., help="Result files: JSON of evaluate / diagnose / privacy mia / "
                                         "transfer, or attack --out .npz."),
    out_dir: Path = typer.Option(Path("report"), "-o", "--out", help="Folder for index.html."),
):
    """One self-contained HTML page (figures embedded, no external resource) from result files."""
    target = write_report(results, out_dir)
    typer.echo(f"report written to {target}")
