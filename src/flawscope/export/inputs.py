"""The images an INT8 export needs, found from the trained bundle's manifest or given folders.

INT8 export reads three sets (:func:`flawscope.export.int8.build_int8`): good images to calibrate
the activation ranges on, the good images the model was trained on to refit its head, and
labelled parts to measure the AUROC loss on. By default all three come from the training
dataset recorded in the manifest: the same split into fitted and held-out images as at training
time (checked against the recorded file-list hash), and the dataset's test split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flawscope.data.datasets import load_dataset, read_image_folder, read_samples
from flawscope.errors import InputError
from flawscope.manifest import Manifest
from flawscope.models.train import file_list_hash, split_holdout

CALIBRATION_LIMIT = 64  # activation ranges settle well before this; more only costs time


@dataclass(frozen=True)
class Int8Inputs:
    """Images for an INT8 export.

    Attributes:
        calibration: good images for activation ranges and the score scale.
        refit: good images to fit the head again on INT8 features.
        holdout: held-out good images (not fitted on) to map INT8 scores onto the fp32 scale;
            empty when a folder replaced the training set.
        validation: labelled ``(images, labels)``, 1 = defective, or ``None``.
        validation_boxes: the true boxes of each validation image, for a model that detects
            boxes (empty otherwise).
        skipped: ``(path, problem)`` of unreadable files.
        notes: what the user should know (a changed training set, no labelled parts).
    """

    calibration: list[np.ndarray] = field(repr=False)
    refit: list[np.ndarray] = field(repr=False)
    holdout: list[np.ndarray] = field(repr=False)
    validation: tuple[list[np.ndarray], list[int]] | None = field(repr=False)
    skipped: list[tuple[str, str]]
    notes: list[str]
    validation_boxes: list[tuple[tuple[float, float, float, float, str], ...]] = field(
        default_factory=list, repr=False
    )

    def export_args(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~flawscope.export.onnx_export.export_bundle` for these images."""
        return {
            "int8": True,
            "calibration_images": self.calibration,
            "refit_images": self.refit,
            "validation": self.validation,
            "good_images": self.holdout,
            "validation_boxes": self.validation_boxes,
        }


def _labelled(folder: str | os.PathLike[str]) -> tuple[list[np.ndarray], list[int], list[tuple[str, str]]]:
    test = read_samples(load_dataset(folder).test, masks=False)
    return list(test.images), [s.label for s in test.samples], list(test.skipped)


def _supervised_inputs(manifest: Manifest, validation_folder: str | os.PathLike[str] | None) -> Int8Inputs:
    """The INT8 images of a model trained on labels: its labelled data, split as at training time.

    Good images it was trained on refit its anomaly head (a station's); the good images held out
    for calibration map the scores; the data's labelled test side (or ``validation_folder``'s
    test split) measures the AUROC loss, and a detector's mAP@0.5 loss on its true boxes. A model
    that knows no good parts (every class a defect, as NEU's) calibrates the activation ranges
    on its training images of every class.
    """
    from flawscope.data.labelled import load_labelled
    from flawscope.data.splits import file_hashes
    from flawscope.declaration import OutputKind
    from flawscope.models.train_supervised import calibration_holdout, read_labelled

    training = manifest.training
    assert training.dataset is not None
    labels = dict(training.labels or {})
    labelled = load_labelled(training.dataset, labels.get("group_pattern"))
    train_side = [s for s in labelled.samples if s.split != "test"]
    seed = int(manifest.model.hyperparameters.get("seed", 0))
    recorded = frozenset(f.sha256 for f in training.holdout.files)
    if recorded:
        # The hold-out as recorded (by content): a retrained candidate held out its base model's
        # calibration parts, which the seeded split would not draw again.
        hashes = file_hashes(train_side)
        train_idx, held_idx = calibration_holdout(train_side, 0.0, seed, hashes, recorded)
    else:
        train_idx, held_idx = calibration_holdout(train_side, training.holdout.fraction, seed)
    fitted = read_labelled([train_side[i] for i in train_idx if train_side[i].cls == "good"], masks=False)
    kept = read_labelled([train_side[i] for i in held_idx], masks=False)
    skipped = fitted.skipped + kept.skipped
    notes: list[str] = []
    declaration = manifest.model.declaration
    knows_good = declaration is None or "good" in declaration.classes
    detects = declaration is not None and any(s.kind is OutputKind.BOXES for s in declaration.outputs)
    if not fitted.images and not knows_good:
        # Activation ranges need typical parts, not good ones; spread over the classes.
        step = max(1, len(train_idx) // CALIBRATION_LIMIT)
        spread = read_labelled([train_side[i] for i in train_idx[::step]], masks=False)
        skipped += spread.skipped
        calibration = spread.images[:CALIBRATION_LIMIT]
        if not calibration:
            raise InputError(training.dataset, "no readable training image for INT8 calibration")
    elif not fitted.images:
        raise InputError(training.dataset, "no readable good training image for INT8 calibration")
    else:
        calibration = (kept.images or fitted.images)[:CALIBRATION_LIMIT]
    validation = None
    validation_boxes: list[tuple[tuple[float, float, float, float, str], ...]] = []
    if validation_folder is not None:
        images, classes, bad = _labelled(validation_folder)
        skipped += bad
        validation = (images, classes) if len(set(classes)) == 2 else None
    else:
        test = read_labelled([s for s in labelled.samples if s.split == "test"], masks=False)
        skipped += test.skipped
        classes = [0 if s.cls == "good" else 1 for s in test.samples]
        if detects and any(s.boxes for s in test.samples):
            validation_boxes = [tuple(s.boxes) for s in test.samples]
        validation = (test.images, classes) if len(set(classes)) == 2 or validation_boxes else None
    if validation is None:
        notes.append("no labelled test parts (good and defective) to check INT8 on: give --validation-data")
    return Int8Inputs(calibration, fitted.images, kept.images, validation, skipped, notes, validation_boxes)


def int8_inputs(
    manifest: Manifest,
    calibration_folder: str | os.PathLike[str] | None = None,
    validation_folder: str | os.PathLike[str] | None = None,
) -> Int8Inputs:
    """Gather the images of an INT8 export.

    Args:
        manifest: the trained bundle's manifest.
        calibration_folder: a flat folder of good images to calibrate and refit on instead of
            the training set (the closer to the training images, the better).
        validation_folder: a dataset with a labelled test split (default: the training dataset).

    Raises:
        InputError: naming the folder, when the training images are gone and no folder was
            given, or when no readable good image is left.
    """
    notes: list[str] = []
    skipped: list[tuple[str, str]] = []
    training = manifest.training
    dataset = training.dataset
    has_dataset = dataset is not None and Path(dataset).exists()
    if training.task is not None and calibration_folder is None and dataset is not None and has_dataset:
        return _supervised_inputs(manifest, validation_folder)
    if calibration_folder is not None:
        folder = read_image_folder(calibration_folder)
        refit, skipped = list(folder.images), list(folder.skipped)
        held: list[np.ndarray] = []
        where: str | os.PathLike[str] = calibration_folder
    elif dataset is not None and has_dataset:
        fit_samples, held_samples = split_holdout(load_dataset(dataset).train, training.holdout.fraction)
        fitted = read_samples(fit_samples, masks=False)
        kept = read_samples(held_samples, masks=False)
        refit, held = list(fitted.images), list(kept.images)
        skipped = list(fitted.skipped) + list(kept.skipped)
        recorded = training.file_list_sha256
        if recorded and fitted.samples and file_list_hash(fitted.samples, dataset) != recorded:
            notes.append(
                f"the training images in {dataset} changed since training; "
                "the INT8 head is fitted on them as they are now"
            )
        where = dataset
    else:
        raise InputError(
            "--calibration-images",
            f"the training images ({dataset}) are not there; give a folder of good images for INT8",
        )
    if not refit:
        raise InputError(where, "no readable good image for INT8 calibration")
    # Held-out images when there are any: the fitted ones score low under any head.
    calibration = (held or refit)[:CALIBRATION_LIMIT]

    validation = None
    labelled_from = validation_folder if validation_folder is not None else (dataset if has_dataset else None)
    if labelled_from is not None:
        images, labels, bad = _labelled(labelled_from)
        skipped += bad
        if len(set(labels)) == 2:
            validation = (images, labels)
        else:
            notes.append(
                f"{labelled_from} has no test split with both good and defective parts to validate INT8 on"
            )
    else:
        notes.append("no labelled parts to validate INT8 on (give --validation-data)")
    return Int8Inputs(calibration, refit, held, validation, skipped, notes)
