"""Reading a feedback dataset (``flawscope feedback export``) for retraining, with its label problems named.

The export's layout: ``DIR/train/good/*`` parts reviewed good, ``DIR/train/<type>/*`` parts reviewed
defective, ``DIR/ground_truth/<type>/<stem>_mask.png`` drawn masks, ``DIR/manifest.csv`` one row
per image (where it came from, which review labelled it), ``DIR/feedback.json`` what the export
left out. A folder without ``manifest.csv`` is read from its folder names alone.

Problems are reported, never silently resolved:

* **conflicting labels**: one image (by SHA-256) under two labels (two reviewers disagreed, or two
  exports were merged) is excluded, every copy, until somebody resolves it; the images the export
  itself already excluded for disagreeing reviews are listed too.
* **new classes**: defect types the base model does not know are named (``known_classes``), so
  that retraining can say what it does with them.
* **duplicates**: the same image (by SHA-256) under the same label twice (a part reviewed twice,
  two exports merged) counts once; the copies are listed.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from flawscope.data.imageio import is_image_file, sha256_file
from flawscope.errors import InputError

GOOD = "good"


@dataclass(frozen=True)
class FeedbackImage:
    """One labelled image of a feedback dataset.

    Attributes:
        path: the image file.
        label: ``"good"`` or the defect type.
        sha256: SHA-256 of the file.
        review_seq: the audit record of the review that labelled it (None: unknown).
        mask: its drawn mask, if any.
    """

    path: str
    label: str
    sha256: str
    review_seq: int | None = None
    mask: str | None = None

    @property
    def is_good(self) -> bool:
        """Whether it was labelled good."""
        return self.label == GOOD


@dataclass(frozen=True)
class FeedbackSet:
    """A feedback dataset, checked.

    Attributes:
        root: the folder.
        images: the usable labelled images, sorted by path.
        excluded: path (or image SHA-256) -> why it is left out.
        conflicts: image SHA-256 -> the labels it was given.
        unreadable: files with an image suffix that could not be hashed.
        duplicates: path -> the image of the same content kept instead (a part reviewed twice
            under the same label, or two exports merged): each image counts once.
    """

    root: str
    images: tuple[FeedbackImage, ...]
    excluded: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unreadable: tuple[str, ...] = ()
    duplicates: dict[str, str] = field(default_factory=dict)

    @property
    def good(self) -> tuple[FeedbackImage, ...]:
        """Images labelled good."""
        return tuple(i for i in self.images if i.is_good)

    @property
    def defects(self) -> tuple[FeedbackImage, ...]:
        """Images labelled defective."""
        return tuple(i for i in self.images if not i.is_good)

    @property
    def classes(self) -> tuple[str, ...]:
        """The defect types present, sorted."""
        return tuple(sorted({i.label for i in self.defects}))

    def counts(self) -> dict[str, int]:
        """Images per label."""
        found: dict[str, int] = defaultdict(int)
        for image in self.images:
            found[image.label] += 1
        return dict(sorted(found.items()))

    def new_classes(self, known: tuple[str, ...] | set[str]) -> tuple[str, ...]:
        """Defect types of this set that are not in ``known``."""
        return tuple(c for c in self.classes if c not in set(known))

    @property
    def review_seqs(self) -> tuple[int, ...]:
        """The reviews behind the labels (audit ``seq``), sorted."""
        return tuple(sorted({i.review_seq for i in self.images if i.review_seq is not None}))


def _manifest_rows(root: Path) -> dict[str, dict[str, str]]:
    path = root / "manifest.csv"
    if not path.is_file():
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return {row["file"]: row for row in csv.DictReader(handle) if row.get("file")}
    except (OSError, KeyError, csv.Error, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read the feedback manifest ({exc})") from None


def _export_conflicts(root: Path) -> list[str]:
    path = root / "feedback.json"
    if not path.is_file():
        return []
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the export report ({exc})") from None
    return [str(sha) for sha in report.get("conflicting_images", [])]


def read_feedback(folder: str | os.PathLike[str]) -> FeedbackSet:
    """Read and check a feedback dataset (see the module docstring).

    Raises:
        InputError: the folder is missing, has no ``train/`` folder, or its manifest is unreadable.
    """
    root = Path(folder).expanduser().absolute()
    if not root.is_dir():
        raise InputError(root, "feedback folder does not exist")
    train = root / "train"
    if not train.is_dir():
        raise InputError(
            root, "not a feedback dataset: no train/ folder (make one with 'flawscope feedback export')"
        )
    rows = _manifest_rows(root)
    images: list[FeedbackImage] = []
    unreadable: list[str] = []
    for label_dir in sorted(p for p in train.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(p for p in label_dir.iterdir() if p.is_file() and is_image_file(p)):
            relative = path.relative_to(root).as_posix()
            row = rows.get(relative, {})
            try:
                digest = row.get("image_sha256") or sha256_file(path)
            except OSError:
                unreadable.append(str(path))
                continue
            seq = row.get("review_seq") or ""
            mask = row.get("mask") or ""
            images.append(
                FeedbackImage(
                    path=str(path),
                    label=label_dir.name,
                    sha256=digest,
                    review_seq=int(seq) if seq.isdigit() else None,
                    mask=str(root / mask) if mask else None,
                )
            )
    labels: dict[str, set[str]] = defaultdict(set)
    for image in images:
        labels[image.sha256].add(image.label)
    conflicts = {sha: tuple(sorted(found)) for sha, found in labels.items() if len(found) > 1}
    excluded = {
        image.path: "the same image is also labelled "
        + ", ".join(x for x in conflicts[image.sha256] if x != image.label)
        for image in images
        if image.sha256 in conflicts
    }
    for sha in _export_conflicts(root):
        excluded.setdefault(sha, "reviews of this image disagreed; the export left it out")
        conflicts.setdefault(sha, ("(left out by the export)",))
    kept: list[FeedbackImage] = []
    first: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    for image in images:
        if image.sha256 in conflicts:
            continue
        if image.sha256 in first:
            # The same content twice would be fitted twice, or land on both sides of a hold-out.
            duplicates[image.path] = first[image.sha256]
            continue
        first[image.sha256] = image.path
        kept.append(image)
    if not kept:
        raise InputError(root, "no usable labelled image in the feedback dataset")
    return FeedbackSet(str(root), tuple(kept), excluded, conflicts, tuple(unreadable), duplicates)
