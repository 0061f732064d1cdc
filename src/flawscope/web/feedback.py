"""The feedback dataset: reviewed parts written as an MVTec-layout dataset that ``flawscope train`` reads.

::

    DIR/train/good/<seq>_<part>.<ext>                 parts reviewed good
    DIR/train/<defect type>/<seq>_<part>.<ext>        parts reviewed defective, by category
    DIR/ground_truth/<defect type>/<seq>_<part>_mask.png   the regions the reviewer drew, if any
    DIR/manifest.csv                                  one row per image: where it came from, who labelled it
    DIR/feedback.json                                 what was exported, skipped and why

The latest review of an inspection is its label. Images are copied byte for byte after checking
their SHA-256 against the audit record (an image changed since inspection is skipped, not
exported); drawn masks are checked against the hash in the review record the same way. Reviews
that disagree about the same image (same SHA-256: two inspections of one file, or two reviewers)
are left out and listed as conflicts until somebody reviews the part again. ``unsure`` reviews are
not labels and are left out. The dataset is written beside ``DIR`` and renamed into place, so a
reader never sees half of it.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flawscope.data.imageio import sha256_file
from flawscope.errors import InputError
from flawscope.line.store import safe_name
from flawscope.web.database import WebDB
from flawscope.web.imaging import StorePathError, inside_store
from flawscope.web.reviews import Review, get_inspection, latest_reviews

MANIFEST_COLUMNS = (
    "file", "label", "defect_type", "mask", "inspection_seq", "review_seq", "part_id", "station",
    "camera", "acquired_at", "image_sha256", "source_image", "reviewer", "reviewed_at",
    "model_version", "model_outcome", "normalized_score", "note",
)  # fmt: skip


@dataclass
class FeedbackSummary:
    """What an export wrote.

    Attributes:
        path: the dataset folder.
        counts: images per folder (``good`` and each defect type).
        masks: masks written.
        skipped: ``(inspection seq, why)`` for each reviewed part left out.
        conflicts: image SHA-256s whose reviews disagree.
    """

    path: Path
    counts: dict[str, int] = field(default_factory=dict)
    masks: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        """Images written."""
        return sum(self.counts.values())


def _label(review: Review) -> str:
    return "good" if review.verdict == "good" else f"defect:{review.category or 'defect'}"


def _conflicts(reviews: list[Review]) -> set[str]:
    by_image: dict[str, set[str]] = defaultdict(set)
    for review in reviews:
        if review.verdict != "unsure" and review.image_sha256:
            by_image[review.image_sha256].add(_label(review))
    return {sha for sha, labels in by_image.items() if len(labels) > 1}


def _prepare(out: Path, overwrite: bool) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise InputError(out, "already exists and is not empty; give --overwrite to replace it")
    if not out.parent.is_dir():
        raise InputError(out.parent, "folder does not exist")
    work = out.with_name(f".{out.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "train" / "good").mkdir(parents=True)
    return work


def export_feedback(db: WebDB, store_root: Path, out: Path, *, overwrite: bool = False) -> FeedbackSummary:
    """Write the reviewed parts as a dataset.

    Args:
        db: the audit database.
        store_root: the image store the reviewed images and drawn masks are in.
        out: the dataset folder to create.
        overwrite: replace ``out`` if it exists.

    Returns:
        What was written and what was left out.

    Raises:
        InputError: ``out`` exists (without ``overwrite``) or cannot be written.
    """
    out = out.expanduser().absolute()
    work = _prepare(out, overwrite)
    summary = FeedbackSummary(out)
    reviews = latest_reviews(db)
    conflicted = _conflicts(reviews)
    summary.conflicts = sorted(conflicted)
    rows: list[dict[str, Any]] = []
    for review in reviews:
        why = _export_one(review, store_root, work, conflicted, summary, rows)
        if why:
            summary.skipped.append((review.ref_seq, why))
    with_inspections(db, rows)
    with (work / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    report = {
        "created_at": time.time(),
        "audit": db.url,
        "image_store": str(store_root),
        "reviews": len(reviews),
        "images": summary.counts,
        "masks": summary.masks,
        "skipped": [{"inspection_seq": s, "why": w} for s, w in summary.skipped],
        "conflicting_images": summary.conflicts,
    }
    (work / "feedback.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    work.rename(out)
    return summary


def _export_one(
    review: Review,
    store_root: Path,
    work: Path,
    conflicted: set[str],
    summary: FeedbackSummary,
    rows: list[dict[str, Any]],
) -> str:
    """Copy one reviewed image (and its mask); the reason it was left out, or ``""``."""
    if review.verdict == "unsure":
        return "the reviewer was unsure"
    if review.image_sha256 in conflicted:
        return "reviews of this image disagree"
    try:
        image = inside_store(store_root, review.image_uri) if review.image_uri else None
    except StorePathError:
        return "the image is outside the image store"
    if image is None or not image.is_file():
        return "the image is no longer in the image store"
    if review.image_sha256 and sha256_file(image) != review.image_sha256:
        return "the stored image changed since it was inspected (SHA-256 differs)"
    folder = "good" if review.verdict == "good" else (review.category or "defect")
    stem = f"{review.ref_seq}_{safe_name(review.part_id)[:80]}"
    target = work / "train" / folder / f"{stem}{image.suffix.lower()}"
    mask_name = ""
    if review.mask and review.verdict == "defect":
        try:
            mask = inside_store(store_root, review.mask)
        except StorePathError:
            return "the drawn mask is outside the image store"
        if not mask.is_file() or sha256_file(mask) != review.mask_sha256:
            return "the drawn mask is missing or changed since the review"
        mask_target = work / "ground_truth" / folder / f"{stem}_mask.png"
        mask_target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mask, mask_target)
        mask_name = mask_target.relative_to(work).as_posix()
        summary.masks += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(image, target)
    summary.counts[folder] = summary.counts.get(folder, 0) + 1
    rows.append(
        {
            "file": target.relative_to(work).as_posix(),
            "label": 0 if review.verdict == "good" else 1,
            "defect_type": folder,
            "mask": mask_name,
            "inspection_seq": review.ref_seq,
            "review_seq": review.seq,
            "part_id": review.part_id,
            "station": review.station,
            "camera": review.source,
            "acquired_at": "",
            "image_sha256": review.image_sha256,
            "source_image": str(image),
            "reviewer": review.reviewer,
            "reviewed_at": review.reviewed_at,
            "model_version": "",
            "model_outcome": "",
            "normalized_score": "",
            "note": review.note,
        }
    )
    return ""


def with_inspections(db: WebDB, rows: list[dict[str, Any]]) -> None:
    """Fill the model's side (outcome, score, version, acquisition time) into manifest rows."""
    for row in rows:
        record = get_inspection(db, int(row["inspection_seq"]))
        if record is not None:
            row["acquired_at"] = record.acquired_at
            row["model_version"] = record.model_version
            row["model_outcome"] = record.outcome.value
            row["normalized_score"] = record.normalized_score
