"""``flawscope train DATA --task ...``: labelled data to a saved bundle, checked before it costs time.

Order of work: list the data (:func:`~flawscope.data.labelled.load_labelled`), refuse what would
waste the run (:func:`~flawscope.data.labelled.check_labelled`: one class, a class too small,
unknown labels, mask sizes; then the split: the same image or group on both sides), and only then
read the images, extract features and train. Good parts held out for calibration
(``holdout``) are chosen by group and never trained on; the model's own validation split (for
early stopping and the temperature) comes from the rest, also by group. The split, the
augmentation, the class counts and the training log go to the manifest.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from flawscope.bundle import Bundle
from flawscope.data.imageio import read_image, read_mask
from flawscope.data.labelled import LabelledSample, LabelledSet, check_labelled, load_labelled
from flawscope.data.splits import Split, check_disjoint, file_hashes, holdout
from flawscope.decide.calibration import MIN_GOOD
from flawscope.declaration import GOOD, Task
from flawscope.errors import InputError
from flawscope.models.base import Progress
from flawscope.models.io import save_model
from flawscope.models.provenance import training_section
from flawscope.models.registry import MODELS, get_model_class
from flawscope.models.supervised import SupervisedModel
from flawscope.models.train import check_params
from flawscope.types import Targets

log = logging.getLogger(__name__)
TASK_MODELS = {
    Task.CLASSIFY: "classifier",
    Task.SEGMENT: "segmenter",
    Task.DETECT: "box_detector",  # beats "detector" on NEU-DET mAP@0.5 (benchmarks/RESULTS.md, issue 13)
    Task.MIXED: "mixed",
}


@dataclass(frozen=True)
class LoadedLabelled:
    """Images, masks and labels read from labelled samples, and the files that could not be used."""

    samples: list[LabelledSample]
    images: list[np.ndarray] = field(repr=False)
    targets: Targets = field(repr=False)
    skipped: list[tuple[str, str]]


def read_labelled(samples: Sequence[LabelledSample], masks: bool = True) -> LoadedLabelled:
    """Read images (and masks); an unreadable image is skipped and named, a bad mask is refused.

    Raises:
        InputError: naming a mask that cannot be read or whose size differs from its image's.
    """
    kept: list[LabelledSample] = []
    images: list[np.ndarray] = []
    read_masks: list[np.ndarray | None] = []
    skipped: list[tuple[str, str]] = []
    for sample in samples:
        try:
            image = read_image(sample.path)
        except InputError as exc:
            log.warning("skipping %s: %s", exc.where, exc.problem)
            skipped.append((str(exc.where), exc.problem))
            continue
        mask: np.ndarray | None = None
        if sample.cls == GOOD:
            mask = np.zeros(image.shape[:2], bool)
        elif masks and sample.mask_path is not None:
            mask = read_mask(sample.mask_path, image.shape[:2])
        kept.append(sample)
        images.append(image)
        read_masks.append(mask)
    targets = Targets(
        tuple(s.cls for s in kept),
        tuple(read_masks) if masks else (),
        tuple(s.boxes for s in kept) if any(s.boxes for s in kept) else (),
        tuple(s.group or f"\0{i}" for i, s in enumerate(kept)) if any(s.group for s in kept) else (),
        tuple(float(s.probability) for s in kept if s.probability is not None)
        if all(s.probability is not None for s in kept)
        else (),
    )
    return LoadedLabelled(kept, images, targets, skipped)


@dataclass(frozen=True)
class SupervisedResult:
    """What a supervised training run produced."""

    bundle: Bundle
    model: SupervisedModel
    n_train: int
    skipped: list[tuple[str, str]]
    holdout_images: list[np.ndarray] = field(repr=False)
    holdout_paths: list[str]
    fit_seconds: float
    notes: list[str]


def calibration_holdout(
    samples: Sequence[LabelledSample],
    fraction: float,
    seed: int = 0,
    hashes: Sequence[str] | None = None,
    held_hashes: frozenset[str] | None = None,
) -> tuple[list[int], list[int]]:
    """Indices to train on and good-part indices held out for calibration (by group, never trained on).

    Args:
        samples: the training side.
        fraction: share of the good images to hold out (unused with ``held_hashes``).
        seed: the stratified split's seed.
        hashes: the samples' SHA-256 (needed with ``held_hashes``).
        held_hashes: hold out exactly the good images with these contents (a retrained
            candidate keeps its base model's calibration parts, see
            :func:`flawscope.improve.retrain.retrain`).
    """
    good = [i for i, s in enumerate(samples) if s.cls == GOOD]
    if held_hashes is not None:
        if hashes is None:
            raise ValueError("held_hashes needs the samples' hashes")
        held = sorted(i for i in good if hashes[i] in held_hashes)
    elif fraction <= 0:
        return list(range(len(samples))), []
    else:
        if not good:
            raise InputError("holdout", "there are no good images to hold out for calibration")
        picked = holdout([samples[i] for i in good], fraction, seed)
        held = sorted(good[i] for i in picked.validation)
    held_groups = {samples[i].group for i in held if samples[i].group is not None}
    # A group held out is held out whole: its defective images leave training too.
    train = [i for i in range(len(samples)) if i not in set(held) and samples[i].group not in held_groups]
    return train, held


def train_supervised(
    data: str | os.PathLike[str] | LabelledSet,
    output: str | os.PathLike[str],
    task: Task | str,
    holdout_fraction: float = 0.0,
    params: dict[str, Any] | None = None,
    group_pattern: str | None = None,
    classes: Sequence[str] | None = None,
    progress: Progress | None = None,
    model_name: str | None = None,
    holdout_hashes: frozenset[str] | None = None,
) -> SupervisedResult:
    r"""Train a supervised model on labelled data and save the bundle.

    Args:
        data: a labelled dataset (folder or CSV, see :mod:`flawscope.data.labelled`).
        output: bundle folder to write.
        task: ``classify``, ``segment``, ``detect`` or ``mixed``.
        holdout_fraction: share of the good images held out (by group) for calibration.
        params: hyperparameters of the model.
        group_pattern: regular expression giving each file's group (e.g. ``kos\\d+``).
        classes: the classes the labels must come from (``None``: those found).
        progress: callback ``(stage, done, total)``.
        model_name: a registered model for the task (default: the task's, :data:`TASK_MODELS`).
        holdout_hashes: hold out exactly the good images with these SHA-256 instead of a
            fraction (a retrained candidate calibrated on its base model's calibration parts).

    Raises:
        InputError: naming the file, class or group at fault; raised before any image is decoded
            for everything that can be checked from names, headers and file hashes.
    """
    try:
        task = Task(task)
    except ValueError:
        raise InputError("--task", f"must be one of {', '.join(TASK_MODELS)}, got {task!r}") from None
    if task not in TASK_MODELS:
        raise InputError(
            "--task", f"must be one of {', '.join(TASK_MODELS)}; train good-parts models with --model"
        )
    cls = get_model_class(model_name or TASK_MODELS[task])
    if cls.task is not task:
        choices = sorted(n for n, c in MODELS.items() if c.task is task)
        raise InputError(
            "--model", f"{cls.name!r} learns task {cls.task!s}, not {task!s}; choose from {choices}"
        )
    params = dict(params or {})
    check_params(cls, params)
    model = cls(**params)
    assert isinstance(model, SupervisedModel)
    labelled = data if isinstance(data, LabelledSet) else load_labelled(data, group_pattern)
    fixed_test = [s for s in labelled.samples if s.split == "test"]
    train_side = replace(labelled, samples=tuple(s for s in labelled.samples if s.split != "test"))
    if len(train_side.counts()) < 2 and task is not Task.MIXED:
        only = next(iter(train_side.counts()), "nothing")
        raise InputError(
            Path(labelled.root) / "train",
            f"the training side holds only {only!r} images: put labelled defects in train/<class>/ "
            "(or use a CSV without a split column)",
        )
    _, notes = check_labelled(train_side, task, classes)
    samples = list(train_side.samples)
    hashes = file_hashes([*samples, *fixed_test])
    train_idx, held_idx = calibration_holdout(
        samples, holdout_fraction, model.config.seed, hashes[: len(samples)], holdout_hashes
    )
    if held_idx and len(held_idx) < MIN_GOOD:
        raise InputError(
            "holdout",
            f"{holdout_fraction:g} holds out {len(held_idx)} good images; calibration needs {MIN_GOOD}",
        )
    everything = [*samples, *fixed_test]
    check_disjoint(
        everything,
        Split(tuple(train_idx), tuple(held_idx), tuple(range(len(samples), len(everything)))),
        hashes,
    )
    start = time.perf_counter()
    loaded = read_labelled([samples[i] for i in train_idx], masks=model.segments)
    held = read_labelled([samples[i] for i in held_idx], masks=False)
    if len({s.cls for s in loaded.samples}) < 2 and task is not Task.MIXED:
        raise InputError(labelled.root, "fewer than two classes are left after skipping unreadable images")
    model.fit(loaded.images, loaded.targets, progress=progress)
    fit_seconds = time.perf_counter() - start
    notes += model.training_.get("notes", [])
    # Per-file records, as an anomaly bundle has: calibration refuses the images trained on, and
    # `calibrate --holdout-of` finds the held-out ones by content (the group-stratified hold-out
    # cannot be repeated from the file names alone).
    training = training_section(
        [s.path for s in loaded.samples],
        [s.path for s in held.samples],
        labelled.root,
        fraction=holdout_fraction,
        rule=(
            "the base model's calibration images (by content), never trained on"
            if holdout_hashes is not None
            else "good images, stratified by group (data.splits.holdout), never trained on"
        ),
        skipped=loaded.skipped + held.skipped,
        dataset=str(Path(data).resolve()) if not isinstance(data, LabelledSet) else labelled.root,
        dataset_name=labelled.name,
        layout=labelled.layout,
        fit_seconds=round(fit_seconds, 3),
        task=str(task),
        split=model.training_.get("split"),
        labels={
            "classes": list(model.classes_),
            "train_counts": model.training_["train_counts"],
            "notes": notes,
            "group_pattern": group_pattern,
        },
        augmentation=model.training_["augmentation"],
        log=model.training_["log"],
    )
    bundle = save_model(model, output, training=training)
    log.info("trained %s on %d images in %.1f s -> %s", model.name, len(loaded.images), fit_seconds, output)
    return SupervisedResult(
        bundle, model, len(loaded.images), loaded.skipped + held.skipped, held.images,
        [s.path for s in held.samples], fit_seconds, notes,
    )  # fmt: skip
