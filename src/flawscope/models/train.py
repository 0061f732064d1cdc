"""Training from a dataset folder to a saved bundle: read, skip bad files, fit, save.

A deterministic part of the good images can be held out for threshold calibration; the split
is recorded in the manifest: every file fitted on and held out, by path and SHA-256
(:mod:`flawscope.models.provenance`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from flawscope.bundle import Bundle
from flawscope.data.datasets import Dataset, load_dataset, read_samples
from flawscope.decide.calibration import MIN_GOOD
from flawscope.declaration import Task
from flawscope.errors import InputError
from flawscope.models.base import Model, ModelConfig, Progress
from flawscope.models.io import save_model
from flawscope.models.provenance import file_records, list_hash, training_section
from flawscope.models.registry import get_model_class
from flawscope.types import Sample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        bundle: the saved bundle.
        model: the fitted model.
        n_train: images fitted on.
        skipped: ``(path, problem)`` of unusable training files.
        holdout_images: good images held out for calibration (not fitted on).
        holdout_paths: their paths.
        fit_seconds: wall time of ``fit``.
    """

    bundle: Bundle
    model: Model
    n_train: int
    skipped: list[tuple[str, str]]
    holdout_images: list[np.ndarray] = field(repr=False)
    holdout_paths: list[str]
    fit_seconds: float


def file_list_hash(samples: Sequence[Sample], root: str) -> str:
    """SHA-256 over ``relative path <TAB> file SHA-256`` lines: identifies the exact training set."""
    return list_hash(file_records([s.path for s in samples], root))


def check_params(cls: type[Model], params: dict[str, Any]) -> None:
    """Refuse unknown hyperparameters and values of the wrong type, naming the parameter.

    A value must have the type of the parameter's default (an int is accepted for a float);
    parameters whose default is ``None`` are checked by the model itself.

    Raises:
        InputError: naming the parameter (``params.NAME``) and the problem.
    """
    defaults = {f.name: f.default for f in fields(ModelConfig)} | cls.default_params()
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise InputError(
            "params",
            f"unknown hyperparameter(s) {', '.join(unknown)} for {cls.name}; "
            f"known: {', '.join(sorted(defaults))}",
        )
    for key, value in params.items():
        default = defaults[key]
        if default is None:
            continue
        expected: tuple[type, ...] = (int, float) if isinstance(default, float) else (type(default),)
        if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, expected):
            raise InputError(
                f"params.{key}",
                f"must be of type {type(default).__name__} (default {default!r}), got {value!r}",
            )


def split_holdout(samples: Sequence[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Deterministic split: every k-th sorted good image goes to the calibration hold-out."""
    if not 0.0 <= fraction < 0.9:
        raise InputError("holdout", f"must be in [0, 0.9), got {fraction}")
    ordered = sorted(samples, key=lambda s: s.path)
    if fraction == 0.0:
        return ordered, []
    step = 1.0 / fraction
    held_index = {int(i * step) for i in range(int(len(ordered) * fraction))}
    fit = [s for i, s in enumerate(ordered) if i not in held_index]
    held = [s for i, s in enumerate(ordered) if i in held_index]
    return fit, held


def train(
    data: str | os.PathLike[str] | Dataset,
    output: str | os.PathLike[str],
    model: str = "padim",
    holdout: float = 0.0,
    params: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Fit a registered model on a dataset's good training images and save the bundle.

    Args:
        data: dataset folder (MVTec AD or plain layout) or a loaded :class:`Dataset`.
        output: bundle folder to write.
        model: registry name.
        holdout: fraction of good training images kept aside for calibration.
        params: hyperparameters (backbone, image_size, ...).
        progress: callback ``(stage, done, total)``.

    Raises:
        InputError: when the dataset is unusable or no training image could be read.
    """
    # Everything a user can mistype is checked before any image is read or fitted on.
    cls = get_model_class(model)
    if cls.task is not Task.ANOMALY:
        why = f"{model!r} learns from labelled defects: train it with --task {cls.task} on labelled images"
        raise InputError("--model", why)
    params = dict(params or {})
    check_params(cls, params)
    estimator = cls(**params)
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    fit_samples, held_samples = split_holdout(dataset.train, holdout)
    if held_samples and len(held_samples) < MIN_GOOD:
        raise InputError(
            "holdout",
            f"{holdout:g} of {len(dataset.train)} good images holds out {len(held_samples)}, but calibration "
            f"needs at least {MIN_GOOD}: raise the fraction or add good images",
        )
    loaded = read_samples(fit_samples, masks=False)
    if not loaded.images:
        first = f" (e.g. {loaded.skipped[0][0]}: {loaded.skipped[0][1]})" if loaded.skipped else ""
        raise InputError(dataset.root, f"none of the {len(fit_samples)} training images could be read{first}")
    held = read_samples(held_samples, masks=False)
    skipped = loaded.skipped + held.skipped
    start = time.perf_counter()
    estimator.fit(loaded.images, progress=progress)
    fit_seconds = time.perf_counter() - start
    # Every file fitted on and held out, by path and SHA-256: calibration refuses training images.
    training = training_section(
        loaded.samples,
        held.samples,
        dataset.root,
        fraction=holdout,
        rule="every k-th good image in sorted path order, k = 1/fraction",
        skipped=skipped,
        dataset=dataset.root,
        dataset_name=dataset.name,
        layout=dataset.layout,
        fit_seconds=round(fit_seconds, 3),
    )
    bundle = save_model(estimator, output, training=training)
    log.info("trained %s on %d images in %.1f s -> %s", model, len(loaded.images), fit_seconds, Path(output))
    return TrainResult(
        bundle,
        estimator,
        len(loaded.images),
        skipped,
        held.images,
        [s.path for s in held.samples],
        fit_seconds,
    )
