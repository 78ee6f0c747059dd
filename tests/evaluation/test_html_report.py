"""``gibbon report``: one self-contained HTML page from real gibbon results on digits, checked as text
and loaded in a real headless Chromium (skipped when chromium is not installed)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from gibbon.core.checks import GibbonInputError
from gibbon.evaluation import html_report as hr
from gibbon.evaluation.report import jsonable, write_json_atomic
from gibbon.evaluation.report_command import load_result, report, write_report

EPS = [0.05, 0.1, 0.2]


@pytest.fixture(scope="module")
def result_files(linear_digits, tmp_path_factory):
    """Real results on digits, written by gibbon's own writers: evaluation, diagnosis, MIA, transfer, attack npz."""
    from gibbon.attacks.registry import parse_attack
    from gibbon.attacks.run import run_attack, save_npz
    from gibbon.data.dataset import Dataset
    from gibbon.evaluation import evaluate
    from gibbon.evaluation.diagnose import diagnose
    from gibbon.privacy.membership import loss_threshold_attack, save_roc
    from gibbon.transfer.matrix import transfer_matrix

    model, data = linear_digits
    folder = tmp_path_factory.mktemp("results")
    small = Dataset("digits", "test", data.x[:60], data.y[:60], data.classes, data.bounds, "sklearn")
    paths = {}
    rep = evaluate(model, small, [parse_attack("fgsm"), parse_attack("pgd:steps=5")], EPS, progress=False)
    paths["evaluation"] = folder / "eval.json"
    rep.to_json(paths["evaluation"])
    diag = diagnose(model, small, eps=0.1, n=30, square_queries=10, probe_samples=20, suite=None)
    paths["diagnosis"] = folder / "diagnosis.json"
    write_json_atomic(paths["diagnosis"], jsonable({"model": "linear<digits>", "transform": None, **diag.to_dict()}))
    inside = Dataset("digits", "test", data.x[100:200], data.y[100:200], data.classes, data.bounds, "sklearn")
    paths["membership"] = save_roc(loss_threshold_attack(model, inside, small), folder / "privacy")["json"]
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.nn.init.zeros_(other[1].bias)
    matrix = transfer_matrix({"linear": model}, {"linear": model, "random": other}, parse_attack("fgsm"),
                             small.x, small.y, eps=0.1)
    paths["transfer"] = folder / "transfer.json"
    matrix.to_json(paths["transfer"])
    paths["attack"] = folder / "adv.npz"
    save_npz(paths["attack"], run_attack(model, small, parse_attack("pgd:steps=5"), eps=0.1, progress=False))
    return {kind: str(p) for kind, p in paths.items()}


@pytest.fixture(scope="module")
def page(result_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    target = write_report(list(result_files.values()), out)
    return target, target.read_text(encoding="utf-8")


def embedded_pngs(text: str) -> list:
    from PIL import Image

    return [Image.open(io.BytesIO(base64.b64decode(b))) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_each_writer_is_detected_by_its_keys(result_files):
    for kind, path in result_files.items():
        assert hr.detect_kind(load_result(path), path) == kind


def test_unknown_or_bad_file_is_one_line_error_naming_it(tmp_path):
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"hello": 1}))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path in (odd, broken, tmp_path / "missing.json"):
        with pytest.raises(GibbonInputError, match=re.escape(str(path))) as err:
            write_report([path], tmp_path / "out")
        assert "\n" not in str(err.value)
    assert not (tmp_path / "out" / "index.html").exists()


def test_page_is_self_contained_with_every_figure(page):
    target, text = page
    assert target.name == "index.html"
    assert not re.search(r"https?://", text) and "<link" not in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    images = embedded_pngs(text)
    # one curve (a single norm), the ROC, the transfer heatmap, the image grid
    assert len(images) == 4
    for image in images:
        pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.std() > 10  # a drawn figure, not a blank canvas
    assert hr.READY_MARKER_ID in text


def test_evaluation_numbers_curves_and_settings_come_from_the_report(result_files, page):
    _, text = page
    rep = load_result(result_files["evaluation"])
    curves = hr.robustness_curves(rep)["linf"]
    assert set(curves) == {"fgsm", "pgd", "worst case"}
    assert [e for e, _ in curves["worst case"]] == EPS
    for i, eps in enumerate(EPS):  # the worst case is never above any attack at the same eps
        assert curves["worst case"][i][1] <= min(curves[a][i][1] for a in ("fgsm", "pgd")) + 1e-12
    assert curves["worst case"][-1][1] < rep["clean_accuracy"]  # the attacks did something
    for w in rep["worst_case"]:
        assert hr.with_interval(w["robust_accuracy"], w["interval"]) in text
    for version in rep["versions"].values():
        assert hr.esc(version) in text
    assert f"<td class=\"num\">{rep['seed']}</td>" in text


def test_diagnosis_checklist_has_every_check_and_verdict(result_files, page):
    _, text = page
    diag = load_result(result_files["diagnosis"])
    table = hr.checklist_table(diag["findings"])
    assert table.count("<tr>") == len(diag["findings"]) + 1
    assert table.count('class="fail">fails<') == sum(f["flagged"] for f in diag["findings"])
    assert table.count('class="ok">ok<') == sum(not f["flagged"] for f in diag["findings"])
    for f in diag["findings"]:
        assert hr.esc(f["title"]) in text
    assert hr.esc(diag["verdict"]) in text and "linear&lt;digits&gt;" in text


def test_membership_transfer_and_attack_sections(result_files, page):
    _, text = page
    mia = load_result(result_files["membership"])
    assert f"{mia['auc']:.3f}" in text
    matrix = load_result(result_files["transfer"])
    assert hr.percent(matrix["rates"]["linear"]["random"]) in text
    arrays = load_result(result_files["attack"])
    assert hr.percent(arrays["success"].mean()) in text
    assert "Attack: adv.npz" in text


def test_strings_from_files_are_escaped(result_files):
    rep = load_result(result_files["evaluation"])
    rep["warnings"] = ["<script>alert('x')</script>"]
    rep["model"] = {"name": '"><img src=x onerror=alert(1)>'}
    rep["results"][0]["attack"] = "<b>evil</b>"
    text = hr.build_page([("<i>name</i>.json", rep)])
    assert "<script>alert" not in text and "<img src=x" not in text and "<b>evil" not in text
    assert "<i>name" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text and "&lt;b&gt;evil&lt;/b&gt;" in text


def test_cli_command_writes_index(result_files, tmp_path):
    app = typer.Typer()
    app.command("report")(report)
    app.command("other")(lambda: None)  # two commands: typer keeps "report" as a subcommand
    runner = CliRunner()
    out = tmp_path / "site"
    done = runner.invoke(app, ["report", result_files["evaluation"], result_files["diagnosis"], "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert (out / "index.html").is_file() and "report written to" in done.output
    assert "Diagnosis: diagnosis.json" in (out / "index.html").read_text(encoding="utf-8")
    odd = tmp_path / "odd.json"
    odd.write_text("[1, 2]")
    failed = runner.invoke(app, ["report", str(odd), "-o", str(out)])
    assert isinstance(failed.exception, GibbonInputError) and "odd.json" in str(failed.exception)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("GIBBON_INSTALL_CHROMIUM") == "1":
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=False, capture_output=True, timeout=600)
        if shutil.which("chromium"):
            return shutil.which("chromium")
    pytest.skip("chromium not installed: apt-get install chromium, or set GIBBON_INSTALL_CHROMIUM=1")


def headless(chromium: str, *args, url: str):
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
             "--no-first-run", "--disable-extensions", *args, url]
    return subprocess.run(flags, capture_output=True, text=True, timeout=60)


def page_errors(stderr: str) -> list:
    """Lines where Chromium logged a JavaScript or resource error from the page."""
    return [line for line in stderr.splitlines()
            if "Uncaught" in line or ("CONSOLE" in line and "file://" in line)
            or "Content Security Policy" in line or "net::ERR_" in line]


def test_page_renders_in_headless_chromium(page, tmp_path):
    from PIL import Image

    chromium = find_chromium()
    target, _ = page
    url = target.resolve().as_uri()
    dom = headless(chromium, "--dump-dom", url=url)
    assert f'id="{hr.READY_MARKER_ID}"' in dom.stdout, dom.stderr[-2000:]  # the inline script ran
    assert "<h1>gibbon report</h1>" in dom.stdout
    assert page_errors(dom.stderr) == [], dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    done = headless(chromium, f"--screenshot={shot}", "--window-size=1200,2000", "--hide-scrollbars", url=url)
    assert shot.is_file(), done.stderr[-2000:]
    assert page_errors(done.stderr) == [], done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2000, 1200)
    assert pixels.std() > 20  # text, tables and figures, not an empty page


def test_chromium_check_catches_a_broken_page(result_files, tmp_path):
    """The browser checks above would see a script error and a blocked external resource."""
    chromium = find_chromium()
    text = hr.build_page([("eval.json", load_result(result_files["evaluation"]))])
    broken = text.replace("<script>", '<img src="https://example.invalid/x.png"><script>undefinedFn();', 1)
    (tmp_path / "index.html").write_text(broken, encoding="utf-8")
    dom = headless(chromium, "--dump-dom", url=(tmp_path / "index.html").as_uri())
    assert f'id="{hr.READY_MARKER_ID}"' not in dom.stdout
    errors = page_errors(dom.stderr)
    assert any("Uncaught" in line for line in errors), dom.stderr[-2000:]
    assert any("Content Security Policy" in line for line in errors), dom.stderr[-2000:]
