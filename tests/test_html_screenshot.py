"""report.html opens in headless Chromium, renders something, and every figure loads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch import nn

from boundary_unlearning import UnlearningData, unlearn
from boundary_unlearning.metrics import compute_metrics
from boundary_unlearning.report import figure_data, render_reports
from conftest import build_tiny

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# Appended to a copy of the page: writes each image's naturalWidth (-1 if not complete) into
# the DOM once everything has loaded, so --dump-dom shows whether the figures decoded.
PROBE = (
    "<pre id='img-widths'></pre><script>addEventListener('load', () => {"
    "document.getElementById('img-widths').textContent = Array.from(document.images)"
    ".map(i => i.complete ? i.naturalWidth : -1).join(',')})</script>"
)


def _chromium() -> str:
    path = shutil.which(CHROMIUM) or shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    return path


def _run(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    profile = tmp / "chrome-profile"
    return subprocess.run(
        [_chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def rendered(
    _trained_tiny: nn.Module, tiny_data: UnlearningData, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A report of original, retrain and Boundary Shrink on the tiny data, rendered."""
    retrained = unlearn("retrain", build_tiny(), tiny_data, epochs=15, lr=0.05, batch_size=16)
    shrunk = unlearn("boundary_shrink", _trained_tiny, tiny_data, eps=0.3, lr=1e-2)
    models = {"original": _trained_tiny, "retrain": retrained, "boundary_shrink": shrunk}
    results: dict[str, Any] = {
        name: {**compute_metrics(m, tiny_data, retrained=retrained, relearn=False), "seconds": 1}
        for name, m in models.items()
    }
    report = {
        "dataset": "tiny", "model": "cnn", "forget_classes": [1], "class_names": ["1"],
        "seeds": [0], "results": results,
        "figures_data": figure_data(models, tiny_data, seed=0, max_points=40),
    }  # fmt: skip
    out = tmp_path_factory.mktemp("html-report")
    render_reports(json.loads(json.dumps(report)), out)
    return out


def test_screenshot_is_not_blank(rendered: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = _run([f"--screenshot={shot}", "--window-size=1200,2000",
                 (rendered / "report.html").as_uri()], tmp_path)  # fmt: skip
    assert shot.is_file(), f"chromium wrote no screenshot: {proc.stderr[-500:]}"
    from matplotlib.image import imread

    pixels = imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (2000, 1200)
    assert float(pixels.std()) > 0.05  # not a uniform page
    colours = np.unique((pixels.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50  # text, table shading and plotted figures


def test_every_figure_loads(rendered: Path, tmp_path: Path) -> None:
    html = (rendered / "report.html").read_text()
    n_images = html.count("<img ")
    assert n_images == len(list((rendered / "figures").glob("*.png"))) == 9
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    proc = _run(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], tmp_path)
    match = re.search(r'<pre id="img-widths">([^<]*)</pre>', proc.stdout)
    assert match and match.group(1), f"probe did not run: {proc.stderr[-500:]}"
    widths = [int(w) for w in match.group(1).split(",")]
    assert len(widths) == n_images
    assert all(w > 0 for w in widths), widths
