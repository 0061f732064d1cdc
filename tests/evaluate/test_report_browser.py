"""The validation report in a real browser: headless Chromium renders it and loads every image.

Skipped when Chromium is not installed (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from flawscope.evaluate.metrics import evaluate_scores
from flawscope.evaluate.report import GALLERY_SIZE, ReportData, write_report


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of 24 generated parts: noisy maps, defects with a bright blob of random strength."""
    root = tmp_path_factory.mktemp("browser")
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:60, 0:80]
    paths, labels, types, maps, masks = [], [], [], [], []
    for i in range(24):
        defect = i >= 14
        blob = np.exp(-((yy - 30) ** 2 + (xx - 20 - 2 * i) ** 2) / 40.0).astype(np.float32)
        strength = float(rng.uniform(0, 1.0)) if defect or i % 3 == 0 else 0.0
        amap = rng.random((60, 80), dtype=np.float32) * 0.5 + strength * blob
        image = rng.integers(90, 170, (60, 80, 3), dtype=np.uint8)
        path = root / f"part_{i:02d}.png"
        cv2.imwrite(str(path), image)
        paths.append(str(path))
        labels.append(int(defect))
        types.append("dent" if defect else "good")
        maps.append(amap)
        masks.append(blob > 0.5 if defect else np.zeros((60, 80), bool))
    scores = np.array([float(m.max()) for m in maps])
    summary = evaluate_scores(scores, labels, types, maps=maps, masks=masks)
    model = {"name": "padim", "backbone": "resnet18", "bundle_version": "beef.t1", "model_hash": "beef" * 16}
    data = ReportData(
        dataset="browser-check", model=model, paths=paths, labels=np.array(labels), defect_types=types,
        scores=scores, summary=summary, maps=maps, masks=masks,
    )  # fmt: skip
    return write_report(data, root / "report.html")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip(
        "headless Chromium is not installed (Debian: apt-get install chromium); browser checks skipped"
    )


def _run_chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / "chromium-profile"
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_browser_renders_a_non_blank_page(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    _run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report.resolve().as_uri())
    picture = cv2.imread(str(shot), cv2.IMREAD_COLOR)
    assert picture is not None and picture.shape[:2] == (2000, 1280)
    assert float(picture.astype(np.float32).var()) > 100.0, "the screenshot is blank"
    # The styled header band is there: the CSS applied.
    b, g, r = (int(v) for v in np.median(picture[10:40, 200:1000].reshape(-1, 3), axis=0))
    assert b > r + 40 and b > 90, f"header is not the report's blue: BGR {b, g, r}"


CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const ok = images.filter((img) => img.complete && img.naturalWidth > 0).length;
  const out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = `loaded ${ok} of ${images.length}`;
  document.body.appendChild(out);
});
</script>"""


def test_browser_loads_every_image(report: Path, tmp_path: Path) -> None:
    html = report.read_text(encoding="utf-8")
    # The report has no script; a copy with a checking script added is what the browser opens.
    wrapper = tmp_path / "check.html"
    wrapper.write_text(html.replace("</body>", CHECK_IMAGES + "</body>"), encoding="utf-8")
    dom = _run_chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", wrapper.resolve().as_uri())
    found = re.search(r'<pre id="image-check">loaded (\d+) of (\d+)</pre>', dom)
    assert found, "the checking script did not run"
    loaded, total = int(found[1]), int(found[2])
    assert total == html.count("<img ") == 2 + 2 * GALLERY_SIZE
    assert loaded == total
