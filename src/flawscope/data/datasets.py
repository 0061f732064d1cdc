"""Finding the images of a dataset on disk and reading them with per-file error reports.

Two layouts are recognised:

* **MVTec AD**: ``train/good/*``, ``test/<type>/*`` (``good`` is label 0, any other folder is a
  defect type, label 1) and masks at ``ground_truth/<type>/<stem>_mask.png`` (or ``<stem>.png``).
* **plain**: a ``good/`` (or ``ok/``, ``normal/``) folder of images, optionally sibling defect
  folders (``bad/``, ``defect/``, ``ng/`` or any other name, which becomes the defect type) and an
  optional ``masks/`` folder; or simply a flat folder of good images.

Nothing is decoded here except by :func:`read_samples`; listing a dataset only looks at names.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flawscope.data.imageio import IMAGE_SUFFIXES, is_image_file, read_image, read_mask
from flawscope.errors import InputError
from flawscope.types import Sample

logger = logging.getLogger(__name__)

LAYOUTS = ("mvtec", "plain")
GOOD_NAMES = ("good", "ok", "normal")
MASK_FOLDERS = ("masks", "mask", "ground_truth")
# Suffixes tried for a mask, PNG first because that is what MVTec AD and flawscope write.
MASK_SUFFIXES = (".png", *(s for s in IMAGE_SUFFIXES if s != ".png"))
# Plain layout with defect folders: every 5th sorted good image is held out for the test split.
HOLDOUT_EVERY = 5
NOT_A_DATASET = (
    "not a dataset: expected train/good/ (MVTec AD layout), a good/ folder of images, or a folder of images"
)


@dataclass(frozen=True)
class Dataset:
    """The images of one dataset, split into training (good only) and test samples.

    Attributes:
        name: folder name of the dataset.
        root: absolute path of the dataset folder.
        layout: ``"mvtec"`` or ``"plain"``.
        train: good samples to fit on, in sorted path order.
        test: good and defective samples to evaluate on, in sorted (type, path) order.
    """

    name: str
    root: str
    layout: str
    train: tuple[Sample, ...]
    test: tuple[Sample, ...] = ()

    @property
    def defect_types(self) -> list[str]:
        """Sorted defect categories present in the test split (``"good"`` excluded)."""
        return sorted({s.defect_type for s in self.test if s.defect_type != "good"})

    @property
    def test_good(self) -> tuple[Sample, ...]:
        """Good samples of the test split."""
        return tuple(s for s in self.test if s.label == 0)

    @property
    def test_defect(self) -> tuple[Sample, ...]:
        """Defective samples of the test split."""
        return tuple(s for s in self.test if s.label == 1)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _images_in(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    try:
        entries = list(folder.iterdir())
    except PermissionError:
        raise InputError(folder, "folder is not readable (permission denied)") from None
    return sorted(p for p in entries if _visible(p) and is_image_file(p) and p.is_file())


def _subfolders(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except PermissionError:
        raise InputError(folder, "folder is not readable (permission denied)") from None
    return sorted(p for p in entries if _visible(p) and p.is_dir())


def _check_folder(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "does not exist")
    if not path.is_dir():
        raise InputError(path, "is a file; expected a dataset folder")


def list_images(folder: str | os.PathLike[str]) -> list[str]:
    """Image files of a flat folder (e.g. calibration images), sorted by name.

    Args:
        folder: a folder holding PNG/JPEG/BMP/TIFF files; subfolders and hidden files are ignored.

    Returns:
        Absolute paths, sorted.

    Raises:
        InputError: when the folder is missing, is a file, or holds no image.
    """
    path = Path(folder).expanduser()
    if not path.exists():
        raise InputError(path, "folder does not exist")
    if not path.is_dir():
        raise InputError(path, "is a file; expected a folder of images")
    images = _images_in(path)
    if not images:
        raise InputError(path, f"no images found: expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    return [str(p.resolve()) for p in images]


def _find_mask(folders: Sequence[Path], stem: str) -> str | None:
    for folder in folders:
        for name in (f"{stem}_mask", stem):
            for suffix in MASK_SUFFIXES:
                candidate = folder / f"{name}{suffix}"
                if candidate.is_file():
                    return str(candidate.resolve())
    return None


def _defect_samples(folder: Path, defect_type: str, mask_folders: Sequence[Path]) -> list[Sample]:
    return [
        Sample(str(p.resolve()), 1, defect_type, _find_mask(mask_folders, p.stem)) for p in _images_in(folder)
    ]


def _good_samples(paths: Sequence[Path]) -> list[Sample]:
    return [Sample(str(p.resolve()), 0, "good", None) for p in paths]


def _load_mvtec(root: Path) -> Dataset:
    train_good = root / "train" / "good"
    if not train_good.is_dir():
        raise InputError(root / "train", "MVTec AD layout needs a train/good/ folder of good images")
    goods = _images_in(train_good)
    if not goods:
        raise InputError(
            train_good, f"training folder has no images: expected good parts as {', '.join(IMAGE_SUFFIXES)}"
        )
    test: list[Sample] = []
    test_root = root / "test"
    if test_root.is_dir():
        for folder in _subfolders(test_root):
            if folder.name == "good":
                test.extend(_good_samples(_images_in(folder)))
            else:
                test.extend(_defect_samples(folder, folder.name, [root / "ground_truth" / folder.name]))
    return Dataset(root.name, str(root), "mvtec", tuple(_good_samples(goods)), _sorted_test(test))


def _sorted_test(samples: list[Sample]) -> tuple[Sample, ...]:
    # Goods first, then defect types alphabetically: stable, readable reports.
    return tuple(sorted(samples, key=lambda s: (s.label, s.defect_type, s.path)))


def _load_plain(root: Path, good_folder: Path) -> Dataset:
    goods = _images_in(good_folder)
    if not goods:
        raise InputError(
            good_folder, f"good-parts folder has no images: expected {', '.join(IMAGE_SUFFIXES)} files"
        )
    mask_roots = [root / name for name in MASK_FOLDERS if (root / name).is_dir()]
    defects: list[Sample] = []
    for folder in _subfolders(root):
        if folder == good_folder or folder.name.lower() in GOOD_NAMES or folder in mask_roots:
            continue
        # Masks may be sorted by type (masks/<type>/) or all in one folder (masks/).
        mask_folders = [m / folder.name for m in mask_roots] + mask_roots
        defects.extend(_defect_samples(folder, folder.name, mask_folders))
    if not defects:
        return Dataset(root.name, str(root), "plain", tuple(_good_samples(goods)), ())
    held = [p for i, p in enumerate(goods) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1]
    kept = [p for i, p in enumerate(goods) if i % HOLDOUT_EVERY != HOLDOUT_EVERY - 1]
    test = _good_samples(held) + defects
    return Dataset(root.name, str(root), "plain", tuple(_good_samples(kept)), _sorted_test(test))


def load_dataset(path: str | os.PathLike[str]) -> Dataset:
    """List the samples of a dataset folder, detecting its layout.

    Args:
        path: dataset folder (MVTec AD layout, a folder with ``good/`` and defect folders, or a
            flat folder of good images).

    Returns:
        The dataset; no image is decoded.

    Raises:
        InputError: when the path is missing, is a file, has no recognisable layout, or its
            training folder is empty.
    """
    root = Path(path).expanduser()
    _check_folder(root)
    root = root.resolve()
    if (root / "train").is_dir():
        return _load_mvtec(root)
    for folder in _subfolders(root):
        if folder.name.lower() in GOOD_NAMES:
            return _load_plain(root, folder)
    images = _images_in(root)
    if images:
        return Dataset(root.name, str(root), "plain", tuple(_good_samples(images)), ())
    raise InputError(root, NOT_A_DATASET)


@dataclass(frozen=True)
class LoadedSamples:
    """Images (and masks) read from a list of samples, and the files that could not be used.

    Unpacks as ``images, masks, skipped = read_samples(...)``.

    Attributes:
        samples: the samples that were read, aligned with ``images`` and ``masks``.
        images: ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 arrays.
        masks: ``(H, W)`` bool arrays: all False for good samples, ``None`` for a defective
            sample that has no mask file.
        skipped: ``(path, problem)`` for every sample left out, naming the file at fault.
    """

    samples: list[Sample] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray | None] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.images, self.masks, self.skipped))

    def __len__(self) -> int:
        return len(self.images)


def read_samples(
    samples: Sequence[Sample], on_error: Literal["skip", "raise"] = "skip", masks: bool = True
) -> LoadedSamples:
    """Read the images and masks of samples, collecting bad files instead of stopping.

    Args:
        samples: samples to read.
        on_error: ``"skip"`` to leave out a sample whose image or mask is unusable and record it
            in ``skipped``; ``"raise"`` to raise the first error.
        masks: read masks too (``False`` gives ``None`` masks and skips the mask files).

    Returns:
        The samples read, their images and masks, and the skipped files with the problem.

    Raises:
        InputError: only with ``on_error="raise"``, for the first unusable file.
    """
    if on_error not in ("skip", "raise"):
        raise InputError("on_error", f"must be 'skip' or 'raise', not {on_error!r}")
    result = LoadedSamples()
    for sample in samples:
        try:
            image = read_image(sample.path)
            mask: np.ndarray | None = None
            if masks and sample.label == 0:
                mask = np.zeros(image.shape[:2], dtype=bool)
            elif masks and sample.mask_path is not None:
                mask = read_mask(sample.mask_path, image.shape[:2])
        except InputError as exc:
            if on_error == "raise":
                raise
            logger.warning("skipping %s: %s", exc.where, exc.problem)
            result.skipped.append((exc.where, exc.problem))
            continue
        result.samples.append(sample)
        result.images.append(image)
        result.masks.append(mask)
    return result


def read_image_folder(folder: str | os.PathLike[str]) -> LoadedSamples:
    """Read a flat folder of good images (calibration, INT8 calibration), skipping unusable files.

    Raises:
        InputError: when the folder is missing or holds no image file.
    """
    return read_samples([Sample(path, 0, "good", None) for path in list_images(folder)], masks=False)
