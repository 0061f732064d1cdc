"""The feedback dataset: reviewed parts as an MVTec-layout dataset with its provenance."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.web.conftest import make_station

from flawscope.audit import AuditLog
from flawscope.data.datasets import load_dataset
from flawscope.data.imageio import read_image, sha256_file
from flawscope.errors import InputError
from flawscope.web.database import WebDB
from flawscope.web.feedback import export_feedback
from flawscope.web.reviews import ReviewDesk


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A station whose parts were reviewed: goods, two defect types (one with a mask), an unsure,
    a conflict between two inspections of one image, and a part whose image went missing."""
    station = make_station(tmp_path_factory.mktemp("fb") / "st", n=42)
    with AuditLog.open(station.url) as audit:
        db = WebDB(station.url)
        desk = ReviewDesk(audit, db, station.images.resolve())
        records = [r for r in audit.records() if r.kind == "inspection"]
        by = {o: [r for r in records if r.outcome.value == o] for o in ("pass", "review", "fail")}
        mask = np.zeros((96, 128), np.uint8)
        mask[20:40, 30:60] = 255
        desk.submit(by["pass"][0].seq, "good", "alice")
        desk.submit(by["pass"][1].seq, "good", "bob")
        desk.submit(by["fail"][0].seq, "defect", "alice", category="dent", mask=mask)
        desk.submit(by["fail"][1].seq, "defect", "bob", category="scratch")
        desk.submit(by["review"][0].seq, "unsure", "alice")
        desk.submit(by["review"][1].seq, "good", "alice")
        # The same image inspected twice (a re-run of the file) and labelled differently.
        twin = audit.append(
            audit.get(by["review"][1].seq).__class__(  # type: ignore[union-attr]
                part_id="twin", station="st-1", acquired_at=1.0, outcome=by["review"][1].outcome,
                image_sha256=by["review"][1].image_sha256, image_uri=by["review"][1].image_uri,
            )
        )  # fmt: skip
        desk.submit(twin.seq or 0, "defect", "bob", category="dent")
        gone = by["pass"][2]
        desk.submit(gone.seq, "good", "alice")
        Path(gone.image_uri).unlink()
        db.close()
    return station, by, gone


def test_reviewed_parts_become_an_mvtec_dataset(reviewed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    station, by, gone = reviewed
    db = WebDB(station.url)
    try:
        summary = export_feedback(db, station.images.resolve(), tmp_path / "feedback")
    finally:
        db.close()
    out = tmp_path / "feedback"
    assert summary.counts == {"good": 2, "dent": 1, "scratch": 1} and summary.masks == 1
    assert sorted(p.name for p in (out / "train").iterdir()) == ["dent", "good", "scratch"]
    assert len(summary.conflicts) == 1
    why = dict(summary.skipped)
    assert why[by["review"][0].seq] == "the reviewer was unsure"
    assert why[by["review"][1].seq] == "reviews of this image disagree"
    assert why[gone.seq] == "the image is no longer in the image store"
    # Images are the stored files, byte for byte; masks sit where the MVTec reader looks for them.
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 4
    for row in rows:
        assert sha256_file(out / row["file"]) == row["image_sha256"]
        assert row["reviewer"] in ("alice", "bob") and row["model_outcome"] in ("pass", "fail")
        assert int(row["inspection_seq"]) < int(row["review_seq"])
    dent = next(r for r in rows if r["defect_type"] == "dent")
    assert dent["mask"] == f"ground_truth/dent/{Path(dent['file']).stem}_mask.png"
    drawn = read_image(out / dent["mask"])
    assert drawn.shape == (96, 128) and int((drawn > 0).sum()) == 20 * 30
    report = json.loads((out / "feedback.json").read_text())
    assert report["images"] == summary.counts and len(report["skipped"]) == 4  # both twins left out
    # flawscope's own reader takes it as an MVTec dataset (train/good is what it trains on today).
    dataset = load_dataset(out)
    assert dataset.layout == "mvtec" and len(dataset.train) == 2


def test_an_existing_folder_is_not_overwritten_unless_asked(reviewed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    station, _, _ = reviewed
    out = tmp_path / "feedback"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    db = WebDB(station.url)
    try:
        with pytest.raises(InputError, match="--overwrite"):
            export_feedback(db, station.images.resolve(), out)
        assert (out / "keep.txt").read_text() == "mine"
        export_feedback(db, station.images.resolve(), out, overwrite=True)
        assert not (out / "keep.txt").exists() and (out / "manifest.csv").is_file()
    finally:
        db.close()


def test_the_cli_exports_and_says_what_it_left_out(reviewed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    station, _, _ = reviewed
    run = subprocess.run(
        [sys.executable, "-m", "flawscope.cli", "feedback", "export", str(tmp_path / "fb"),
         "--audit", station.url, "--images", str(station.images)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "train/good" in run.stdout and "left out 1: the reviewer was unsure" in run.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "flawscope.cli", "feedback", "export", str(tmp_path / "fb2"),
         "--audit", station.url, "--images", str(tmp_path / "nowhere")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and "image store folder does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
