"""Which files a bundle was trained on and held out, and the good images a calibration may use.

A bundle's manifest lists, in its ``training`` section, every file the model was fitted on and
every file held out for calibration, each by its path under the dataset folder and its SHA-256
(``training.files`` and ``training.holdout.files``; the older ``file_list_sha256`` digests stay).
Calibrating on training images would set the thresholds on scores the model has already seen,
which are lower than a new good part's, so the line would reject more good parts than the
calibration promised; :func:`training_overlap` finds such files by content, wherever they were
copied to. :func:`holdout_samples` finds a bundle's own hold-out again in its dataset folder, and
:func:`calibration_samples` the good images of a folder or of a dataset.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flawscope.data.datasets import GOOD_NAMES, list_images, load_dataset
from flawscope.data.imageio import sha256_file
from flawscope.errors import InputError
from flawscope.manifest import FileRecord, HoldoutSection, Manifest, SkippedFile, TrainingSection
from flawscope.types import Sample


def file_records(
    paths: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str]
) -> tuple[FileRecord, ...]:
    """Each file's path under ``root`` and SHA-256, sorted by path.

    Args:
        paths: image files.
        root: the dataset folder the paths are recorded relative to (a file outside it keeps
            its absolute path).
    """
    records = []
    for path in paths:
        relative = os.path.relpath(path, root)
        shown = Path(path).resolve().as_posix() if relative.startswith("..") else Path(relative).as_posix()
        records.append(FileRecord(shown, sha256_file(path)))
    return tuple(sorted(records, key=lambda r: r.path))


def list_hash(records: Sequence[FileRecord]) -> str:
    """SHA-256 over ``path <TAB> sha256`` lines: one digest for a whole file list (``file_list_sha256``)."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.path):
        digest.update(f"{record.path}\t{record.sha256}\n".encode())
    return digest.hexdigest()


def training_section(
    fitted: Sequence[Sample | str | os.PathLike[str]],
    held: Sequence[Sample | str | os.PathLike[str]],
    root: str | os.PathLike[str],
    *,
    fraction: float = 0.0,
    rule: str = "",
    skipped: Sequence[tuple[str, str]] = (),
    **extra: Any,
) -> TrainingSection:
    """The manifest's ``training`` section for files fitted on and held out.

    Args:
        fitted: the images the model was fitted on (samples or paths).
        held: the good images held out for calibration.
        root: the dataset folder paths are recorded under.
        fraction: the hold-out's share of the good images.
        rule: how the hold-out was chosen.
        skipped: ``(path, problem)`` of unusable files.
        **extra: other :class:`~flawscope.manifest.TrainingSection` fields (dataset, layout...).
    """
    fit_records = file_records([_path(s) for s in fitted], root)
    held_records = file_records([_path(s) for s in held], root)
    holdout = HoldoutSection(
        fraction=fraction,
        n_images=len(held_records),
        rule=rule,
        file_list_sha256=list_hash(held_records) if held_records else None,
        files=held_records,
    )
    return TrainingSection(
        n_images=len(fit_records),
        file_list_sha256=list_hash(fit_records),
        files=fit_records,
        holdout=holdout,
        skipped=tuple(SkippedFile(p, why) for p, why in skipped),
        **extra,
    )


def _path(item: Sample | str | os.PathLike[str]) -> str:
    return item.path if isinstance(item, Sample) else os.fspath(item)


def trained_on(manifest: Manifest) -> dict[str, str] | None:
    """SHA-256 -> recorded path of every file the bundle was fitted on; ``None`` when unknown.

    Bundles made before per-file records (only ``file_list_sha256``), or models fitted on arrays
    in Python, do not know their files.
    """
    files = manifest.training.files
    if not files:
        return None
    return {f.sha256: f.path for f in files}


@dataclass(frozen=True)
class Overlap:
    """Calibration images that the bundle was trained on.

    Attributes:
        files: ``(calibration image path, path it was recorded under in training)`` pairs.
        checked: how many calibration images were compared.
    """

    files: tuple[tuple[str, str], ...]
    checked: int

    def __bool__(self) -> bool:
        return bool(self.files)

    def describe(self) -> str:
        """``"12 of 52 calibration images were used to train this bundle (e.g. ...)"``."""
        path, recorded = self.files[0]
        return (
            f"{len(self.files)} of {self.checked} calibration images were used to train this bundle "
            f"(e.g. {path} is its training image {recorded})"
        )


def training_overlap(manifest: Manifest, paths: Iterable[str | os.PathLike[str]]) -> Overlap | None:
    """The calibration files whose content is a training file of the bundle.

    Files are compared by SHA-256, so a training image copied elsewhere is still found.

    Returns:
        The overlap (falsy when there is none), or ``None`` when the bundle does not record its
        training files or a path is not a file (images given as arrays).
    """
    known = trained_on(manifest)
    if known is None:
        return None
    listed = [os.fspath(p) for p in paths]
    if not all(os.path.isfile(p) for p in listed):
        return None
    hits = tuple((p, known[h]) for p in listed if (h := sha256_file(p)) in known)
    return Overlap(hits, len(listed))


def check_not_trained_on(
    manifest: Manifest,
    paths: Iterable[str | os.PathLike[str]],
    allow: bool = False,
    where: object = "calibration images",
) -> Overlap | None:
    """Refuse calibration images the bundle was trained on (see :func:`training_overlap`).

    Args:
        manifest: the bundle's manifest.
        paths: the calibration image files.
        allow: return the overlap instead of refusing it (the caller warns).
        where: what to name in the error (the folder the images came from).

    Returns:
        The overlap (``None`` when the bundle does not know its training files).

    Raises:
        InputError: when some images are training images and ``allow`` is False.
    """
    overlap = training_overlap(manifest, paths)
    if overlap and not allow:
        raise InputError(
            where,
            f"{overlap.describe()}; a model scores the images it was fitted on lower than new good "
            "parts, so thresholds set on them would reject more good parts than calibrated. Use the "
            "bundle's own hold-out (flawscope calibrate BUNDLE --holdout-of DATA), good images it "
            "has not seen, or --allow-training-images to calibrate on them anyway",
        )
    return overlap


def holdout_samples(manifest: Manifest, data: str | os.PathLike[str]) -> list[Sample]:
    """The good images a bundle held out at training, found again in its dataset folder.

    The recorded hold-out file list is used, each file checked against its recorded SHA-256;
    a bundle from before per-file records repeats the split (every k-th sorted good image) and
    checks it against the recorded list digest.

    Args:
        manifest: the bundle's manifest.
        data: the dataset folder the bundle was trained on (it may have moved).

    Raises:
        InputError: when the bundle has no hold-out, or the dataset's files are not the ones
            held out (missing, changed, or another dataset).
    """
    holdout = manifest.training.holdout
    if not holdout.n_images:
        raise InputError(
            "--holdout-of",
            "this bundle was trained without a hold-out (train --holdout FRACTION keeps one); "
            "give a folder of good images it was not trained on instead",
        )
    root = Path(data).expanduser().resolve()
    if not holdout.files:
        return _repeat_split(manifest.training, root)
    samples = []
    for record in holdout.files:
        path = Path(record.path) if Path(record.path).is_absolute() else root / record.path
        if not path.is_file():
            raise InputError(path, f"held-out image of this bundle is missing from {root}")
        if sha256_file(path) != record.sha256:
            raise InputError(path, "differs from the image this bundle held out (SHA-256 does not match)")
        samples.append(Sample(str(path), 0, "good", None))
    return samples


def _repeat_split(training: TrainingSection, root: Path) -> list[Sample]:
    from flawscope.models.train import split_holdout

    dataset = load_dataset(root)
    _, held = split_holdout(dataset.train, training.holdout.fraction)
    skipped = {s.path for s in training.skipped}
    held = [s for s in held if s.path not in skipped]
    if list_hash(file_records([s.path for s in held], root)) != training.holdout.file_list_sha256:
        raise InputError(
            root,
            "its good images are not the ones this bundle was trained and held out on "
            "(the hold-out's file-list hash does not match)",
        )
    return held


def calibration_samples(folder: str | os.PathLike[str]) -> tuple[list[Sample], str]:
    """The good images to calibrate on in a folder, and which ones they are, in words.

    * a folder with images directly inside: those images (subfolders are not searched);
    * a dataset in the MVTec AD layout: its ``train/good`` images;
    * a folder with a ``good/`` (``ok/``, ``normal/``) subfolder: all of that folder's images.

    Test images (``test/good``) are never taken: they are for evaluation.

    Raises:
        InputError: when the folder is missing, is a file or holds none of these.
    """
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InputError(
            path, "folder does not exist" if not path.exists() else "is a file; expected a folder"
        )
    chosen = path
    if (path / "train" / "good").is_dir():
        chosen = path / "train" / "good"
    elif not any(p.is_file() and not p.name.startswith(".") for p in path.iterdir()):
        goods = [p for p in sorted(path.iterdir()) if p.is_dir() and p.name.lower() in GOOD_NAMES]
        if not goods:
            raise InputError(
                path,
                "no images in this folder, and no train/good/ or good/ folder of good images: give a "
                "folder of good images, a dataset, or --holdout-of DATA",
            )
        chosen = goods[0]
    samples = [Sample(p, 0, "good", None) for p in list_images(chosen)]
    where = str(chosen) if chosen == path else f"{chosen} (the good images of the dataset {path})"
    return samples, where
