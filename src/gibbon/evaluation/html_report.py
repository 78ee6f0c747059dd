"""One self-contained HTML page from the results gibbon writes (``gibbon report``).

Pure functions: loaded results (JSON dicts, or the arrays of an attack ``.npz``) in, HTML strings
out. The page needs nothing outside itself: styles are inline, figures are matplotlib PNGs
embedded as ``data:`` URIs, and a Content-Security-Policy forbids any other source, so it opens
the same offline, attached to an e-mail or archived next to the JSON. Every string that comes from
a result file goes through :func:`html.escape` (a model name or a warning can hold ``<``).

Kinds of input, told apart by their keys (:func:`detect_kind`):

- ``evaluation``: :meth:`gibbon.evaluation.Report.to_json` (``gibbon evaluate --json``): robustness
  curves (one PNG per norm), the accuracy table, warnings, settings, seed and versions.
- ``diagnosis``: ``gibbon diagnose --json``: verdict, the checklist (check, verdict, evidence,
  advice), the accuracies, the remedies and the adaptive robust accuracy.
- ``membership``: ``gibbon privacy mia`` (``membership.json``): AUC, TPR at low FPR, the ROC.
- ``transfer``: ``gibbon transfer --json``: the transfer-rate heatmap, clean accuracy, noise floor.
- ``attack``: ``gibbon attack --out adv.npz``: a clean | perturbation | adversarial image grid.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math

import numpy as np

from gibbon.core.checks import GibbonInputError

READY_MARKER_ID = "gibbon-report-ready"
"""Id of the element the page's one inline script adds: its presence in the DOM proves scripts ran."""
GRID_SAMPLES = 8
"""Rows of the clean | perturbation | adversarial image grid (the first samples of the file)."""

KINDS = ("evaluation", "diagnosis", "membership", "transfer", "attack")
_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'")
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1d2329; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 3px solid #2b6cb0; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #cbd5e0; }
table { border-collapse: collapse; margin: .8em 0; font-size: .92em; }
th, td { border: 1px solid #cbd5e0; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #edf2f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.worst td { font-weight: bold; background: #fefcbf; }
.ok { color: #276749; font-weight: bold; } .fail { color: #c53030; font-weight: bold; }
.warn { background: #fffaf0; border-left: 4px solid #dd6b20; padding: .4em .8em; margin: .3em 0; }
pre { background: #f7fafc; border: 1px solid #e2e8f0; padding: .6em; overflow-x: auto; font-size: .85em; }
img { max-width: 100%; } .meta { color: #4a5568; font-size: .9em; }
"""


# ----------------------------------------------------------------------------- kinds
def detect_kind(result, name: str) -> str:
    """Which gibbon writer produced ``result`` (a JSON dict or a dict of npz arrays), from its keys.

    Raises:
        GibbonInputError: none matches (one line naming ``name``).
    """
    keys = set(result) if isinstance(result, dict) else set()
    if {"schema_version", "results", "worst_case", "clean_accuracy"} <= keys:
        return "evaluation"
    if {"verdict", "findings", "accuracies"} <= keys:
        return "diagnosis"
    if {"auc", "roc", "tpr_at_fpr"} <= keys:
        return "membership"
    if {"sources", "targets", "rates"} <= keys:
        return "transfer"
    if {"x", "x_adv", "y", "pred_adv"} <= keys:
        return "attack"
    raise GibbonInputError(f"{name}: not a gibbon result (expected the JSON of evaluate, diagnose, privacy mia or "
                           "transfer, or the .npz of attack --out)")


# ----------------------------------------------------------------------------- small helpers
def esc(value) -> str:
    """``value`` as text safe inside HTML (element content and quoted attributes)."""
    return html.escape(str(value), quote=True)


def percent(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * float(value):.1f}%"


def with_interval(value, interval) -> str:
    if not interval or len(interval) != 2:
        return percent(value)
    return f"{percent(value)} [{100 * float(interval[0]):.1f}, {100 * float(interval[1]):.1f}]"


def eps_label(eps) -> str:
    return "unbounded" if eps is None else f"{float(eps):g}"


def pretty_json(value) -> str:
    """An escaped, indented JSON block (settings, evidence, versions)."""
    return f"<pre>{esc(json.dumps(value, indent=1, sort_keys=True, default=str))}</pre>"


def rounded(value, digits: int = 4):
    """``value`` with every float rounded to ``digits`` significant digits (evidence fits a table cell)."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def compact_json(value) -> str:
    return esc(json.dumps(rounded(value), sort_keys=True, default=str))


def _class_attr(css: str) -> str:
    return f' class="{esc(css)}"' if css else ""


def html_table(header: list, rows: list, row_classes: list | None = None) -> str:
    """A table whose cells are already HTML (callers escape); a cell may be ``(html, css_class)``."""
    def cell(tag, value):
        text, css = value if isinstance(value, tuple) else (value, "")
        return f"<{tag}{_class_attr(css)}>{text}</{tag}>"

    head = "<tr>" + "".join(cell("th", h) for h in header) + "</tr>" if header else ""
    body = [f"<tr{_class_attr(row_classes[i] if row_classes else '')}>" + "".join(cell("td", c) for c in row) + "</tr>"
            for i, row in enumerate(rows)]
    return f"<table>{head}{''.join(body)}</table>"


def key_value_table(rows: list) -> str:
    """A two-column table without a header row (cells already HTML, as in :func:`html_table`)."""
    return html_table([], rows)


def settings_table(settings: dict) -> str:
    """One row per setting, its value as compact JSON."""
    return key_value_table([[esc(k), f"<code>{compact_json(v)}</code>"] for k, v in settings.items()])


def png_data_uri(fig, dpi: int = 100) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (the page embeds, never links)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img_tag(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def _figure(width: float, height: float):
    # a bare Figure (no pyplot): no global state, no GUI backend, safe in a server or a test
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


# ----------------------------------------------------------------------------- evaluation
def attack_labels(results: list) -> list[str]:
    """A label per result: the attack name, with its parameters where two results share a name."""
    def full(r):
        params = r.get("params") or {}
        return f"{r['attack']}({', '.join(f'{k}={v}' for k, v in params.items())})" if params else r["attack"]

    names = {}
    for r in results:
        names.setdefault(r["attack"], set()).add(full(r))
    return [full(r) if len(names[r["attack"]]) > 1 else r["attack"] for r in results]


def robustness_curves(report: dict) -> dict:
    """``norm -> {label -> [(eps, accuracy), ...]}``, the worst case under ``"worst case"`` (bounded eps only)."""
    curves: dict = {}
    for label, r in zip(attack_labels(report["results"]), report["results"]):
        if r["eps"] is not None:
            curves.setdefault(r["norm"], {}).setdefault(label, []).append((float(r["eps"]), float(r["robust_accuracy"])))
    for w in report["worst_case"]:
        if w["eps"] is not None:
            curves.setdefault(w["norm"], {}).setdefault("worst case", []).append((float(w["eps"]), float(w["robust_accuracy"])))
    return {norm: {k: sorted(v) for k, v in lines.items()} for norm, lines in curves.items()}


def curve_png(norm: str, lines: dict, clean_accuracy: float) -> str:
    """Robust accuracy vs eps, one line per attack, the worst case thick and black, clean accuracy at eps 0."""
    fig = _figure(6.4, 3.8)
    ax = fig.add_subplot()
    for label, points in lines.items():
        eps, acc = zip(*[(0.0, clean_accuracy), *points])  # every curve starts at the clean accuracy
        worst = label == "worst case"
        ax.plot(eps, [100 * a for a in acc], marker="o", label=label, color="black" if worst else None,
                linewidth=3 if worst else 1.5, zorder=3 if worst else 2)
    ax.set_xlabel(f"eps ({norm})")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Robust accuracy vs eps, {norm}")
    return png_data_uri(fig)


def evaluation_table(report: dict) -> str:
    """Rows: attacks and the worst case; columns: (norm, eps); cells: accuracy and 95% Wilson interval."""
    columns = list(dict.fromkeys((r["norm"], r["eps"]) for r in report["results"]))
    columns += [c for c in ((w["norm"], w["eps"]) for w in report["worst_case"]) if c not in columns]
    rows: dict = {}
    for label, r in zip(attack_labels(report["results"]), report["results"]):
        star = "*" if r.get("partial") else ""
        rows.setdefault(label, {})[(r["norm"], r["eps"])] = with_interval(r["robust_accuracy"], r.get("interval")) + star
    rows["worst case"] = {(w["norm"], w["eps"]): with_interval(w["robust_accuracy"], w.get("interval"))
                          for w in report["worst_case"]}
    header = ["attack"] + [f"{esc(norm)} eps={esc(eps_label(eps))}" for norm, eps in columns]
    body = [[esc(label)] + [(esc(cells.get(c, "-")), "num") for c in columns] for label, cells in rows.items()]
    classes = [""] * (len(body) - 1) + ["worst"]
    note = ("<p class=\"meta\">* cascade: accuracy after this attack and the ones before it</p>"
            if any(r.get("partial") for r in report["results"]) else "")
    return html_table(header, body, classes) + note


def cost_table(report: dict) -> str:
    """Per result: wall time, gradient and forward rows (what the attack cost)."""
    body = [[esc(label), esc(eps_label(r["eps"])), (f"{float(r.get('seconds', 0)):.2f}", "num"),
             (f"{int(r.get('gradients', 0)):,}", "num"), (f"{int(r.get('forwards', 0)):,}", "num")]
            for label, r in zip(attack_labels(report["results"]), report["results"])]
    return html_table(["attack", "eps", "seconds", "gradient rows", "forward rows"], body)


def warnings_html(warnings: list) -> str:
    if not warnings:
        return "<p>No warnings.</p>"
    return "".join(f'<div class="warn">{esc(w)}</div>' for w in warnings)


def model_label(model: dict) -> str:
    """A model's one-line description: its card's name, else its class and parameter count, else its JSON."""
    if model.get("name") or model.get("description"):
        return str(model.get("name") or model.get("description"))
    if "class" in model and "parameters" in model:
        return f"{model['class']} ({int(model['parameters']):,} parameters)"
    return json.dumps(model, sort_keys=True, default=str)


def evaluation_section(report: dict, name: str) -> str:
    """An evaluation report: summary, curves per norm, table, warnings, threat model and settings."""
    config = report.get("config", {})
    dataset = report.get("dataset", {})
    threat = {k: config[k] for k in ("norm", "eps", "target", "cascade", "suite", "bounds") if k in config}
    model = report.get("model", {})
    summary = key_value_table([
        ["model", esc(model_label(model))],
        ["dataset", esc(f"{dataset.get('name', '?')} / {dataset.get('split', '?')}")],
        ["samples", (esc(report.get("n")), "num")],
        ["clean accuracy", (esc(with_interval(report["clean_accuracy"], report.get("clean_interval"))), "num")],
        ["seed", (esc(report.get("seed")), "num")],
        ["started / finished", esc(f"{report.get('started', '')} / {report.get('finished', '')}")],
    ])
    curves = robustness_curves(report)
    figures = "".join(img_tag(curve_png(norm, lines, float(report["clean_accuracy"])), f"robustness curve {norm}")
                      for norm, lines in curves.items())
    return "".join([
        f"<h2>Evaluation: {esc(name)}</h2>", summary,
        "<h3>Robustness curves</h3>", figures or "<p>No bounded eps: no curve.</p>",
        "<h3>Robust accuracy (95% Wilson intervals)</h3>", evaluation_table(report),
        f"<h3>Warnings ({len(report.get('warnings', []))})</h3>", warnings_html(report.get("warnings", [])),
        "<h3>Threat model</h3>", settings_table(threat),
        "<details><summary>Cost per attack and eps; all settings, model, dataset and versions</summary>",
        "<h4>Cost</h4>", cost_table(report),
        "<h4>Settings</h4>", pretty_json(config), "<h4>Model</h4>", pretty_json(report.get("model", {})),
        "<h4>Dataset</h4>", pretty_json(dataset), "<h4>Versions</h4>", pretty_json(report.get("versions", {})),
        "</details>",
    ])


# ----------------------------------------------------------------------------- diagnosis
def checklist_table(findings: list) -> str:
    """Each check: id, what it checks, ok / fails, its evidence and (when it fails) what to do."""
    body = []
    for f in findings:
        verdict = ("fails", "fail") if f.get("flagged") else ("ok", "ok")
        body.append([esc(f.get("check", "")), esc(f.get("title", "")), verdict,
                     f"<code>{compact_json(f.get('evidence', {}))}</code>",
                     esc(f.get("advice", "")) if f.get("flagged") else ""])
    return html_table(["check", "what it checks", "verdict", "evidence", "what to do"], body)


def accuracies_table(accuracies: dict) -> str:
    body = [[esc(name), (esc(with_interval(a.get("accuracy"), a.get("interval"))), "num"), (esc(a.get("n", "")), "num"),
             esc(eps_label(a.get("eps")) if "eps" in a else ""), esc(a.get("remedy", ""))]
            for name, a in accuracies.items()]
    return html_table(["attack", "robust accuracy", "n", "eps", "remedy"], body)


def diagnosis_section(diagnosis: dict, name: str) -> str:
    """A diagnosis: verdict, adaptive robust accuracy, checklist, accuracies, remedies, settings."""
    suspected = diagnosis.get("masking_suspected", diagnosis.get("verdict") == "masking suspected")
    verdict_css = "fail" if suspected else "ok"
    remedies = diagnosis.get("remedies", [])
    remedy_rows = [[esc(r.get("name", "")), esc(r.get("why", "")), (esc(percent(r.get("accuracy"))), "num")]
                   for r in remedies]
    return "".join([
        f"<h2>Diagnosis: {esc(name)}</h2>",
        f'<p>Verdict: <span class="{verdict_css}">{esc(diagnosis.get("verdict", ""))}</span>; adaptive robust '
        f"accuracy <b>{esc(with_interval(diagnosis.get('adaptive_robust_accuracy'), diagnosis.get('adaptive_interval')))}"
        f"</b>; model {esc(diagnosis.get('model', '?'))}; {float(diagnosis.get('seconds', 0)):.1f} s.</p>",
        "<h3>Checklist</h3>", checklist_table(diagnosis.get("findings", [])),
        "<h3>Accuracies (95% Wilson intervals)</h3>", accuracies_table(diagnosis.get("accuracies", {})),
        "<h3>Remedies applied</h3>",
        html_table(["remedy", "why", "accuracy"], remedy_rows) if remedy_rows else "<p>None.</p>",
        "<h3>Settings</h3>", settings_table(diagnosis.get("settings", {})),
    ])


# ----------------------------------------------------------------------------- membership inference
def roc_png(roc: dict, auc: float) -> str:
    """The ROC on log-log axes (the low-FPR corner is what matters, Carlini et al. 2022, arXiv:2112.03570)."""
    fpr, tpr = np.asarray(roc["fpr"], dtype=float), np.asarray(roc["tpr"], dtype=float)
    floor = 1e-4
    fig = _figure(4.6, 4.2)
    ax = fig.add_subplot()
    ax.plot(np.maximum(fpr, floor), np.maximum(tpr, floor), label=f"attack (AUC {auc:.3f})")
    ax.plot([floor, 1], [floor, 1], "--", color="gray", label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title("Membership inference ROC")
    return png_data_uri(fig)


def membership_section(result: dict, name: str) -> str:
    rows = [["attack", esc(result.get("attack", ""))], ["AUC", (f"{float(result['auc']):.3f}", "num")],
            ["balanced accuracy", (esc(percent(result.get("balanced_accuracy"))), "num")],
            ["members / non-members", esc(f"{result.get('members', '?')} / {result.get('non_members', '?')}")]]
    rows += [[esc(f"TPR at {percent(float(fpr))} FPR"), (esc(percent(tpr)), "num")]
             for fpr, tpr in result.get("tpr_at_fpr", {}).items()]
    roc = result.get("roc") or {}
    figure = img_tag(roc_png(roc, float(result["auc"])), "ROC") if roc.get("fpr") else "<p>No ROC points.</p>"
    return f"<h2>Membership inference: {esc(name)}</h2>" + key_value_table(rows) + figure


# ----------------------------------------------------------------------------- transfer
def heatmap_png(matrix: dict) -> str:
    """Transfer rates, sources as rows and targets as columns, each cell annotated."""
    sources, targets = matrix["sources"], matrix["targets"]
    rates = np.array([[float(matrix["rates"][s][t]) for t in targets] for s in sources])
    fig = _figure(1.2 + 1.1 * len(targets), 1.0 + 0.7 * len(sources))
    ax = fig.add_subplot()
    image = ax.imshow(100 * rates, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(targets)), [str(t) for t in targets], rotation=30, ha="right")
    ax.set_yticks(range(len(sources)), [str(s) for s in sources])
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    for i in range(len(sources)):
        for j in range(len(targets)):
            ax.text(j, i, f"{100 * rates[i, j]:.0f}%", ha="center", va="center",
                    color="white" if rates[i, j] < 0.6 else "black", fontsize=9)
    fig.colorbar(image, ax=ax, label="transfer rate (%)")
    ax.set_title("Transfer rate (source -> target)")
    return png_data_uri(fig)


def transfer_section(matrix: dict, name: str) -> str:
    targets = matrix["targets"]
    rows = [[esc(s)] + [(esc(percent(matrix["rates"][s][t])), "num") for t in targets] for s in matrix["sources"]]
    rows.append(["(clean accuracy)"] + [(esc(percent(matrix.get("clean_accuracy", {}).get(t))), "num") for t in targets])
    if matrix.get("noise_floor"):
        rows.append(["(random noise of size eps)"] + [(esc(percent(matrix["noise_floor"].get(t))), "num") for t in targets])
    return "".join([f"<h2>Transfer matrix: {esc(name)}</h2>", img_tag(heatmap_png(matrix), "transfer heatmap"),
                    html_table(["source \\ target"] + [esc(t) for t in targets], rows),
                    "<h3>Settings</h3>", settings_table(matrix.get("settings", {}))])


# ----------------------------------------------------------------------------- attack images
def _as_image(sample: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> what ``imshow`` takes: ``(H, W)`` for one channel, ``(H, W, 3)`` for three."""
    return sample[0] if sample.shape[0] == 1 else np.transpose(sample[:3], (1, 2, 0))


def image_grid_png(x: np.ndarray, x_adv: np.ndarray, y: np.ndarray, pred_adv: np.ndarray, rows: int = GRID_SAMPLES) -> str:
    """Clean | perturbation | adversarial for the first ``rows`` samples; the perturbation on a
    symmetric colour scale around 0 shared by all rows (so sizes compare across rows)."""
    rows = min(rows, len(x))
    delta = x_adv[:rows].astype(float) - x[:rows].astype(float)
    scale = float(np.abs(delta).max()) or 1.0
    fig = _figure(5.4, 1.7 * rows)
    for i in range(rows):
        panels = [(_as_image(x[i]), f"clean, label {int(y[i])}", dict(cmap="gray", vmin=0, vmax=1)),
                  (_as_image(delta[i]).mean(axis=-1) if x.shape[1] == 3 else _as_image(delta[i]),
                   f"perturbation (±{scale:.3g})", dict(cmap="seismic", vmin=-scale, vmax=scale)),
                  (_as_image(x_adv[i]), f"adversarial, pred {int(pred_adv[i])}", dict(cmap="gray", vmin=0, vmax=1))]
        for j, (image, title, style) in enumerate(panels):
            ax = fig.add_subplot(rows, 3, 3 * i + j + 1)
            ax.imshow(np.clip(image, 0, 1) if j != 1 else image, interpolation="nearest", **style)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    return png_data_uri(fig)


def attack_section(arrays: dict, name: str) -> str:
    """An attack ``.npz``: success rate, distances and the image grid."""
    settings = json.loads(str(arrays["settings"])) if "settings" in arrays else {}
    success = np.asarray(arrays.get("success", np.zeros(0)), dtype=bool)
    distance = np.asarray(arrays.get("distance", np.zeros(0)), dtype=float)
    finite = distance[success & np.isfinite(distance)] if len(distance) == len(success) else distance[:0]
    rows = [["samples", (str(len(arrays["x"])), "num")],
            ["success rate", (esc(percent(success.mean()) if len(success) else "-"), "num")],
            ["median distance (successes)", (f"{np.median(finite):.4g}" if len(finite) else "-", "num")]]
    return "".join([f"<h2>Attack: {esc(name)}</h2>", key_value_table(rows),
                    img_tag(image_grid_png(arrays["x"], arrays["x_adv"], arrays["y"], arrays["pred_adv"]),
                            "clean, perturbation and adversarial images"),
                    "<h3>Settings</h3>", settings_table(settings)])


# ----------------------------------------------------------------------------- page
SECTIONS = {"evaluation": evaluation_section, "diagnosis": diagnosis_section, "membership": membership_section,
            "transfer": transfer_section, "attack": attack_section}


def result_section(result, name: str) -> str:
    """The section for one loaded result, of whichever kind its keys say."""
    return SECTIONS[detect_kind(result, name)](result, name)


def build_page(named_results: list, *, generated: str | None = None, version: str = "") -> str:
    """The whole page for ``[(name, result), ...]`` (names are shown, e.g. the file names)."""
    generated = generated or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    sections = [result_section(result, name) for name, result in named_results]
    inputs = "".join(f"<li><code>{esc(name)}</code> ({esc(detect_kind(result, name))})</li>"
                     for name, result in named_results)
    # The one script: proves in a headless browser that the page's scripts ran (the test reads the DOM).
    script = (f"<script>var m=document.createElement('div');m.id='{READY_MARKER_ID}';m.hidden=true;"
              "document.body.appendChild(m);</script>")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>gibbon report</title>", f"<style>{_STYLE}</style></head><body>",
        "<h1>gibbon report</h1>",
        f'<p class="meta">Generated {esc(generated)}{f" by gibbon {esc(version)}" if version else ""} from:</p>',
        f"<ul>{inputs}</ul>", *sections, script, "</body></html>\n",
    ])


__all__ = ["detect_kind", "build_page", "result_section", "evaluation_section", "diagnosis_section",
           "membership_section", "transfer_section", "attack_section", "robustness_curves", "KINDS",
           "READY_MARKER_ID"]
