"""Calibrating a bundle: score held-out good images, choose thresholds, append a version.

The torch model scores the images so a trained bundle can be calibrated before export; the
thresholds are stored as a new version in the bundle's manifest (never an edit of an old one).
The same images and scores become the drift monitor's reference (:mod:`flawscope.monitor`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from flawscope.bundle import read_bundle, update_manifest
from flawscope.decide.calibration import MIN_GOOD, CalibrationResult, calibrate
from flawscope.errors import InputError
from flawscope.monitor.reference import MIN_REFERENCE, build_reference


def calibrate_bundle(
    bundle_path: str | os.PathLike[str],
    good_images: Sequence[np.ndarray],
    *,
    target_frr: float = 0.01,
    defect_images: Sequence[np.ndarray] = (),
    review_rate: float | None = None,
    review_threshold: float | None = None,
    names: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> CalibrationResult:
    """Score held-out images with the bundle's model and store calibrated thresholds as a new version.

    Args:
        bundle_path: trained bundle folder.
        good_images: held-out good images (not used in training).
        target_frr: false-reject rate target, in (0, 0.5).
        defect_images: optional defective images, to report recall at the threshold.
        review_rate: share of good parts to send to review (review band below the reject threshold).
        review_threshold: explicit review threshold instead of ``review_rate``.
        names: file names of the good images (for warnings).
        progress: callback ``(stage, done, total)``.

    Returns:
        The calibration result; its thresholds carry the new version number.
    """
    from flawscope.models.io import load_model

    check_calibration_options(target_frr, review_rate, review_threshold)
    if len(good_images) < MIN_GOOD:
        raise InputError(
            "calibration images", f"calibration needs at least {MIN_GOOD} good images, got {len(good_images)}"
        )
    if names is not None and len(names) != len(good_images):
        raise InputError("names", f"got {len(names)} names for {len(good_images)} good images")
    model, bundle = load_model(bundle_path)
    good = model.predict(good_images, progress=progress).scores
    defects = model.predict(defect_images).scores if len(defect_images) else None
    result = calibrate(
        good,
        target_frr=target_frr,
        defect_scores=defects,
        review_rate=review_rate,
        review_threshold=review_threshold,
        names=names,
    )
    # The version number comes from the manifest as it is now, not as it was before scoring: a
    # calibration stored meanwhile keeps its version instead of being overwritten.
    current = read_bundle(bundle.path)
    history = current.thresholds.add(result.thresholds)
    changes: dict[str, Any] = {"thresholds": history, "calibration": result.to_dict()}
    if len(good_images) >= MIN_REFERENCE:
        # The drift monitor's reference: the same parts, so it describes the line as calibrated.
        changes["monitor"] = build_reference(good_images, good, model.name)
    update_manifest(bundle, **changes)
    return _with_version(result, history.active.version)


def check_calibration_options(
    target_frr: float, review_rate: float | None = None, review_threshold: float | None = None
) -> None:
    """Check calibration options before any image is scored (the same rules as ``calibrate``).

    Raises:
        InputError: naming the option, for a target outside (0, 0.5), a review rate outside
            [0, 1), a non-finite review threshold, or both review options.
    """
    if not (isinstance(target_frr, int | float) and 0.0 < target_frr < 0.5):
        raise InputError("target_frr", f"must be in (0, 0.5), got {target_frr}")
    if review_rate is not None and review_threshold is not None:
        raise InputError("review_rate", "give either review_rate or review_threshold, not both")
    if review_rate is not None and not 0.0 <= review_rate < 1.0:
        raise InputError("review_rate", f"must be in [0, 1), got {review_rate}")
    if review_threshold is not None and not math.isfinite(review_threshold):
        raise InputError("review_threshold", f"must be a finite number, got {review_threshold}")


def _with_version(result: CalibrationResult, version: int) -> CalibrationResult:
    from dataclasses import replace

    return replace(result, thresholds=replace(result.thresholds, version=version))
