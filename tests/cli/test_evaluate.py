"""``flawscope evaluate`` on data without masks says that the masks are missing, not the maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def test_without_masks_the_note_names_the_missing_masks(cli, trained, tmp_path: Path):
    data = Path(shutil.copytree(trained.data, tmp_path / "no-masks"))
    shutil.rmtree(data / "ground_truth")
    bundle = Path(shutil.copytree(trained.bundle, tmp_path / "bundle"))
    metrics, report = tmp_path / "metrics.json", tmp_path / "report.html"
    run = cli("evaluate", bundle, data, "--json", metrics, "--report", report, cwd=tmp_path, columns=80)
    assert run.rc == 0, run.text
    said = " ".join(run.out.split())  # Rich wraps the note at 80 columns
    assert "note: no ground-truth masks for the defective images: pixel metrics are undefined" in said
    notes = json.loads(metrics.read_text())["metrics"]["overall"]["notes"]
    assert any("no ground-truth masks" in note for note in notes), notes
    page = report.read_text()
    assert "no ground-truth masks" in page
    assert "anomaly maps: pixel" not in page and not any("anomaly maps" in note for note in notes)
    assert max(len(line) for line in run.out.splitlines()) <= 80
