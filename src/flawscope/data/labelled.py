r"""Labelled training data: images with a class each, and masks or boxes where they exist.

Three sources, each listed without decoding an image:

* **MVTec AD layout, extended**: ``train/good/``, ``train/<defect>/`` with masks in
  ``ground_truth/<defect>/<stem>_mask.png`` (the test split's naming), and the usual ``test/``.
  Every image of both splits is a sample; ``split`` says where the layout put it.
* **plain layout**: one folder per class (``good/``, ``ok/`` or ``normal/`` is the good class),
  optional ``masks/`` (``masks/<class>/<stem>.png`` or ``masks/<stem>.png``) and optional
  ``annotations/<stem>.xml`` (Pascal VOC boxes).
* **CSV**: ``path,label[,mask][,group][,split][,probability]`` with a header (``class`` is
  accepted for ``label``); paths relative to the CSV's folder; ``probability`` (if the column
  exists, a number in [0, 1] on every row) is the labelled probability that the part is defective.

A group (the physical item an image shows) comes from the CSV or from ``group_pattern``, a
regular expression on the file name (``kos\\d+`` for KolektorSDD): images of one item never end up
on both sides of a split (:mod:`flawscope.data.splits`).

:func:`check_labelled` refuses what would waste a training run, before any image is decoded,
naming the file or class at fault.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from flawscope.data.datasets import GOOD_NAMES, MASK_FOLDERS, _find_mask, _images_in, _subfolders
from flawscope.declaration import GOOD, Task
from flawscope.errors import InputError

log = logging.getLogger(__name__)

MIN_PER_CLASS = 5
Box = tuple[float, float, float, float, str]


@dataclass(frozen=True)
class LabelledSample:
    """One labelled image, before it is read.

    Attributes:
        path: image file.
        cls: ``"good"`` or its defect class.
        mask_path: defect mask (any pixel > 0 is defective), if one exists.
        group: the physical item, if known.
        boxes: ``(x0, y0, x1, y1, class)`` boxes in image pixels (x1/y1 exclusive).
        split: ``"train"`` or ``"test"`` when the source fixes it, else ``None``.
        probability: the labelled probability that the part is defective (a CSV's
            ``probability`` column: annotators' agreement or confidence), if known.
    """

    path: str
    cls: str
    mask_path: str | None = None
    group: str | None = None
    boxes: tuple[Box, ...] = ()
    split: str | None = None
    probability: float | None = None

    @property
    def label(self) -> int:
        """0 for a good part, 1 for a defective one."""
        return 0 if self.cls == GOOD else 1


@dataclass(frozen=True)
class LabelledSet:
    """A labelled dataset.

    Attributes:
        name: dataset name.
        root: its folder (or the CSV's folder).
        layout: ``"mvtec"``, ``"plain"`` or ``"csv"``.
        samples: the images, sorted by path.
        notes: what the reader decided for the user (masks missing, groups found...).
    """

    name: str
    root: str
    layout: str
    samples: tuple[LabelledSample, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names: ``"good"`` first when present, then the defect classes sorted."""
        found = {s.cls for s in self.samples}
        return tuple(sorted(found, key=lambda c: (c != GOOD, c)))

    def counts(self) -> dict[str, int]:
        """Images per class."""
        return dict(Counter(s.cls for s in self.samples))

    def select(self, split: str) -> LabelledSet:
        """The samples of one fixed split (``"train"`` or ``"test"``)."""
        return replace(self, samples=tuple(s for s in self.samples if s.split == split))


def _group(path: str, pattern: re.Pattern[str] | None) -> str | None:
    if pattern is None:
        return None
    found = pattern.search(Path(path).name)
    if found is None:
        return None
    return found.group(1) if found.groups() else found.group(0)


def read_voc(path: str | os.PathLike[str]) -> tuple[Box, ...]:
    """The boxes of a Pascal VOC annotation file.

    Raises:
        InputError: naming the file when it is not VOC XML or a box is malformed.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(path, f"is not a readable Pascal VOC annotation ({exc})") from None
    boxes = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        try:
            assert box is not None and name
            x0, y0, x1, y1 = (float(box.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AssertionError, ValueError):
            raise InputError(path, "has an object without a name or a numeric bndbox") from None
        if not (x1 > x0 and y1 > y0):
            raise InputError(path, f"box of {name!r} is empty: ({x0}, {y0}, {x1}, {y1})")
        # VOC coordinates are 1-based and inclusive.
        boxes.append((x0 - 1, y0 - 1, x1, y1, name))
    return tuple(boxes)


def _with_boxes(samples: list[LabelledSample], folder: Path) -> list[LabelledSample]:
    if not folder.is_dir():
        return samples
    return [
        replace(s, boxes=read_voc(folder / f"{Path(s.path).stem}.xml"))
        if (folder / f"{Path(s.path).stem}.xml").is_file()
        else s
        for s in samples
    ]


def _load_mvtec(root: Path, pattern: re.Pattern[str] | None) -> list[LabelledSample]:
    samples = []
    for split in ("train", "test"):
        base = root / split
        if not base.is_dir():
            continue
        for folder in _subfolders(base):
            cls = GOOD if folder.name.lower() in GOOD_NAMES else folder.name
            for path in _images_in(folder):
                mask = None if cls == GOOD else _find_mask([root / "ground_truth" / folder.name], path.stem)
                samples.append(
                    LabelledSample(str(path.resolve()), cls, mask, _group(str(path), pattern), (), split)
                )
    return samples


def _load_plain(root: Path, pattern: re.Pattern[str] | None) -> list[LabelledSample]:
    mask_roots = [root / name for name in MASK_FOLDERS if (root / name).is_dir()]
    skip = {*(m.name for m in mask_roots), "annotations"}
    samples = []
    for folder in _subfolders(root):
        if folder.name in skip:
            continue
        cls = GOOD if folder.name.lower() in GOOD_NAMES else folder.name
        masks = [m / folder.name for m in mask_roots] + mask_roots
        for path in _images_in(folder):
            mask = None if cls == GOOD else _find_mask(masks, path.stem)
            samples.append(LabelledSample(str(path.resolve()), cls, mask, _group(str(path), pattern)))
    return _with_boxes(samples, root / "annotations")


def _load_csv(path: Path, pattern: re.Pattern[str] | None) -> list[LabelledSample]:
    base = path.parent
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"cannot be read as CSV ({exc})") from None
    if not rows:
        raise InputError(
            path,
            "has no rows: expected a header path,label[,mask][,group][,split][,probability] "
            "and one row per image",
        )
    header = {k.strip().lower() for k in rows[0] if k}
    label_key = "label" if "label" in header else "class" if "class" in header else None
    if "path" not in header or label_key is None:
        raise InputError(path, f"header must name 'path' and 'label' (or 'class'); it has {sorted(header)}")
    samples = []
    annotations = base / "annotations"
    for line, row in enumerate(rows, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if not row["path"] or not row[label_key]:
            raise InputError(f"{path}:{line}", "empty path or label")
        image = (base / row["path"]).resolve()
        if not image.is_file():
            raise InputError(f"{path}:{line}", f"image {row['path']!r} does not exist")
        label = GOOD if row[label_key].lower() in GOOD_NAMES else row[label_key]
        mask = None
        if row.get("mask"):
            mask_path = (base / row["mask"]).resolve()
            if not mask_path.is_file():
                raise InputError(f"{path}:{line}", f"mask {row['mask']!r} does not exist")
            mask = str(mask_path)
        split = row.get("split") or None
        if split not in (None, "train", "test"):
            raise InputError(f"{path}:{line}", f"split must be 'train' or 'test', got {split!r}")
        group = row.get("group") or _group(str(image), pattern)
        xml = annotations / f"{image.stem}.xml"
        boxes = read_voc(xml) if xml.is_file() else ()
        probability = _probability(row.get("probability", ""), f"{path}:{line}", "probability" in header)
        samples.append(LabelledSample(str(image), label, mask, group, boxes, split, probability))
    return samples


def _probability(text: str, where: str, column: bool) -> float | None:
    """A CSV row's labelled defect probability: ``None`` without the column, else a number in [0, 1]."""
    if not column:
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise InputError(where, f"probability must be a number in [0, 1], got {text!r}")
    return value


def load_labelled(path: str | os.PathLike[str], group_pattern: str | None = None) -> LabelledSet:
    """List a labelled dataset (no image is decoded).

    Args:
        path: an MVTec-layout folder, a plain folder (one folder per class) or a CSV file. A folder
            holding ``splits.csv`` (or ``labels.csv``) is read through it.
        group_pattern: regular expression on file names giving each image's group (its first
            capture group if it has one, else the whole match).

    Raises:
        InputError: naming the path, for a missing path or no recognisable layout.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise InputError(root, "does not exist")
    try:
        pattern = re.compile(group_pattern) if group_pattern else None
    except re.error as exc:
        raise InputError("--group-pattern", f"is not a regular expression ({exc})") from None
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise InputError(
                root, "is a file; expected a dataset folder or a CSV of path,label[,mask][,group]"
            )
        samples, layout, folder = _load_csv(root, pattern), "csv", root.parent
    elif (root / "train").is_dir():
        samples, layout, folder = _load_mvtec(root, pattern), "mvtec", root
    elif any((root / name).is_file() for name in ("splits.csv", "labels.csv")):
        table = next(root / name for name in ("splits.csv", "labels.csv") if (root / name).is_file())
        samples, layout, folder = _load_csv(table, pattern), "csv", root
    else:
        samples, layout, folder = _load_plain(root, pattern), "plain", root
    if not samples:
        raise InputError(
            root,
            "no labelled images: expected train/<class>/ (MVTec AD layout), one folder per class, or a CSV",
        )
    samples.sort(key=lambda s: s.path)
    notes = []
    if pattern is not None:
        missing = [s.path for s in samples if s.group is None]
        if missing:
            raise InputError(missing[0], f"file name does not match the group pattern {group_pattern!r}")
        notes.append(f"{len({s.group for s in samples})} groups from the pattern {group_pattern!r}")
    return LabelledSet(folder.resolve().name, str(folder.resolve()), layout, tuple(samples), tuple(notes))


def _size(path: str) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot be read as an image ({exc})") from None


def check_labelled(
    data: LabelledSet,
    task: Task,
    classes: Sequence[str] | None = None,
    min_per_class: int = MIN_PER_CLASS,
) -> tuple[LabelledSet, list[str]]:
    """Refuse training data that would waste a run; say what was decided for the rest.

    Checked before any image is decoded (mask sizes are read from the file headers):

    * one class only, or a class with fewer than ``min_per_class`` images: refused, naming it
      (merge the class into another in a CSV, or add images);
    * a label outside ``classes`` (when the expected classes are given): refused, naming the file;
    * a mask whose size differs from its image's: refused, naming the mask;
    * a segmenting task with masks for only some defective images: those images train on their
      image label alone, and the returned notes say how many (none at all: refused);
    * a detection task without boxes: refused.

    Args:
        data: the labelled set.
        task: what is to be trained.
        classes: the classes the user expects (``None``: whatever the data holds).
        min_per_class: the fewest images a class may have.

    Returns:
        The set (unchanged) and notes for the user and the manifest.

    Raises:
        InputError: naming the file or class at fault.
    """
    notes: list[str] = []
    counts = data.counts()
    if classes is not None:
        allowed = set(classes)
        for s in data.samples:
            if s.cls not in allowed:
                raise InputError(s.path, f"label {s.cls!r} is not one of the classes {sorted(allowed)}")
    if task is not Task.MIXED and len(counts) < 2:
        (only,) = counts
        raise InputError(
            data.root,
            f"has one class only ({only!r}, {counts[only]} images): a {task} model needs at least two",
        )
    for cls, n in sorted(counts.items()):
        if n < min_per_class:
            raise InputError(
                f"class {cls!r}",
                f"has {n} image(s), fewer than {min_per_class}: add images, or merge it into another class "
                "(relabel it in a CSV)",
            )
    defects = [s for s in data.samples if s.cls != GOOD]
    with_masks = [s for s in defects if s.mask_path is not None]
    for s in with_masks:
        assert s.mask_path is not None
        if _size(s.mask_path) != _size(s.path):
            mw, mh = _size(s.mask_path)
            iw, ih = _size(s.path)
            raise InputError(
                s.mask_path, f"mask is {mw}x{mh} px but its image {Path(s.path).name} is {iw}x{ih} px"
            )
    if task is Task.SEGMENT:
        if not with_masks:
            raise InputError(
                data.root, "a segment task needs defect masks and none was found (masks/ or ground_truth/)"
            )
        if len(with_masks) < len(defects):
            missing = [s for s in defects if s.mask_path is None]
            notes.append(
                f"{len(missing)} of {len(defects)} defective images have no mask "
                f"(e.g. {Path(missing[0].path).name}): they train on their image label only"
            )
    if task is Task.DETECT and not any(s.boxes for s in data.samples):
        raise InputError(
            data.root, "a detect task needs boxes (annotations/<stem>.xml, Pascal VOC) and none was found"
        )
    return data, notes
