"""The HTML report in a real headless browser (Chromium from the system packages).

The page records, in attributes of <body>, whether its scripts ran without
errors and whether every image loaded; the test reads them back from the DOM
Chromium produced, and keeps a screenshot in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from alemap.cli.main import main

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("ALEMAP_REQUIRE_BROWSER") == "1":
        pytest.fail("ALEMAP_REQUIRE_BROWSER=1 but no Chromium is installed")
    pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it")


def _run(browser, *args, timeout=120):
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--virtual-time-budget=8000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def report(tmp_path_factory, finger_path):
    out = tmp_path_factory.mktemp("report")
    assert main(["ale", str(finger_path), "-o", str(out), "--iterations", "200", "--quiet", "--jobs", "2"]) == 0
    return out / "report.html"


def test_report_loads_without_errors(report):
    browser = _chromium()
    res = _run(browser, "--dump-dom", report.as_uri())
    body = re.search(r"<body[^>]*>", res.stdout)
    assert body, res.stderr[-2000:]
    tag = body.group(0)
    assert 'data-ready="1"' in tag, tag
    assert 'data-errors="0"' in tag, tag
    assert 'data-viewer="ok"' in tag, tag
    m = re.search(r'data-images="(\d+) images, (\d+) broken"', tag)
    assert m and int(m.group(1)) >= 2 and int(m.group(2)) == 0, tag
    assert "<table" in res.stdout and "Clusters" in res.stdout and "Methods" in res.stdout
    assert "Uncaught" not in res.stderr


def test_report_screenshot(report):
    browser = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    res = _run(browser, f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri())
    assert shot.exists() and shot.stat().st_size > 20000, res.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_folder_without_clusters(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("// Reference=MNI\n// A, 2000: x\n// Subjects=10\n-38 -24 56\n")
    out = tmp_path / "o"
    assert main(["ale", str(f), "-o", str(out), "--iterations", "32", "--quiet"]) == 0
    text = (out / "report.html").read_text()
    assert "No significant cluster" in text or "nothing to show" in text
