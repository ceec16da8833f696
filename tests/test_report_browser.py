"""The HTML report in a real browser: headless Chromium loads it, its DOM holds every
scorecard row and every figure, and a screenshot of it is not blank."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.browser]
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        if os.environ.get("REQUIRE_BROWSER"):
            pytest.fail("REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    return path


def run_browser(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_report_dom_has_scorecard_rows_and_every_figure(smoke_results: Path, tmp_path: Path) -> None:
    report = smoke_results / "report.html"
    proc = run_browser(["--dump-dom", report.as_uri()], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    claims = figures = 0
    for verdicts in smoke_results.glob("*/verdicts.json"):
        claims += len(json.loads(verdicts.read_text())["claims"])
    for registry in smoke_results.glob("*/figures/*.json"):
        figures += len(json.loads(registry.read_text()))
    assert claims > 0 and figures > 0
    assert len(re.findall(r'<tr class="scorecard-row"', dom)) == claims
    images = re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', dom)
    assert len(images) == figures
    assert 'id="toolkit-table"' in dom  # the estimators' accuracy table


def test_report_screenshot_is_not_blank(smoke_results: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    proc = run_browser(
        [f"--screenshot={shot}", "--window-size=1280,2400", (smoke_results / "report.html").as_uri()],
        tmp_path,
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.std() > 10, "screenshot is (nearly) one colour"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    # the verdict badges' colours are on the page
    greens = np.all(np.abs(pixels - np.array([0x2E, 0x7D, 0x32])) < 8, axis=-1)
    assert greens.sum() > 100
