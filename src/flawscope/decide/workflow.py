"""Calibrating a bundle: score held-out good images, choose thresholds, append a version.

The torch model scores the images so a trained bundle can be calibrated before export; the
thresholds are stored as a new version in the bundle's manifest (never an edit of an old one).
The same images and scores become the drift monitor's reference (:mod:`flawscope.monitor`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from flawscope.bundle import read_bundle, update_manifest
from flawscope.decide.calibration import MIN_GOOD, CalibrationResult, calibrate
from flawscope.errors import InputError
from flawscope.monitor.reference import MIN_REFERENCE, build_reference


def calibrate_bundle(
    bundle_path: str | os.PathLike[str],
    good_images: Sequence[np.ndarray | str | os.PathLike[str]],
    *,
    target_frr: float = 0.01,
    defect_images: Sequence[np.ndarray] = (),
    review_rate: float | None = None,
    review_threshold: float | None = None,
    names: Sequence[str] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    allow_training_images: bool = False,
    min_confidence: float | None = None,
    band_rule: str = "shared",
) -> CalibrationResult:
    """Score held-out images with the bundle's model and store calibrated thresholds as a new version.

    Args:
        bundle_path: trained bundle folder.
        good_images: held-out good images (not used in training): arrays or file paths.
        target_frr: false-reject rate target, in (0, 0.5).
        defect_images: optional defective images, to report recall at the threshold.
        review_rate: share of good parts to send to review (review band below the reject threshold).
        review_threshold: explicit review threshold instead of ``review_rate``.
        names: file paths of the good images (for warnings, and to refuse training images).
        progress: callback ``(stage, done, total)``.
        allow_training_images: calibrate even when some good images are files the bundle was
            trained on (a warning is kept with the result and in the manifest).
        min_confidence: a fail whose defect category is less probable goes to review (models
            that classify; default: 0.5 when the model has more than one defect class).
        band_rule: how a station's heads share the review band: ``shared`` (each stops as many
            good parts) or ``anomaly`` (the band is the anomaly head's; the trained head fails
            what reaches its reject threshold), see :mod:`flawscope.decide.station_band`.

    The thresholds apply to the model's decision score: the anomaly score of a good-parts model,
    the defect probability of a trained one. A station (a trained model with an anomaly head
    beside it) also gets ``anomaly_reject``, calibrated on the same good parts' anomaly scores
    at the same target: a part above it that the trained head passes goes to review. With a
    review band, both heads share it (:mod:`flawscope.decide.station_band`): the station stops
    no more held-out good parts than the trained head's false rejects and band alone would.

    Returns:
        The calibration result; its thresholds carry the new version number.

    Raises:
        InputError: for a bad option, too few images, or (unless ``allow_training_images``)
            good images the bundle was trained on: the model has seen them, so their scores are
            lower than a new good part's, and thresholds set on them reject more good parts than
            calibrated.
    """
    from flawscope.data.imageio import as_images
    from flawscope.models.io import load_model
    from flawscope.models.provenance import check_not_trained_on

    check_calibration_options(target_frr, review_rate, review_threshold)
    if band_rule not in ("shared", "anomaly"):
        raise InputError("band_rule", f"must be 'shared' or 'anomaly', got {band_rule!r}")
    if len(good_images) < MIN_GOOD:
        raise InputError(
            "calibration images", f"calibration needs at least {MIN_GOOD} good images, got {len(good_images)}"
        )
    if names is None and all(isinstance(item, str | os.PathLike) for item in good_images):
        names = [os.fspath(item) for item in good_images]  # type: ignore[arg-type]
    if names is not None and len(names) != len(good_images):
        raise InputError("names", f"got {len(names)} names for {len(good_images)} good images")
    model, bundle = load_model(bundle_path)
    overlap = check_not_trained_on(bundle.manifest, names, allow_training_images) if names else None
    images = as_images(good_images)  # read once: scored here and described by the drift reference
    predicted = model.predict(images, progress=progress)
    good = predicted.scores
    defects = model.predict(defect_images).scores if len(defect_images) else None
    result = calibrate(
        good,
        target_frr=target_frr,
        defect_scores=defects,
        review_rate=review_rate,
        review_threshold=review_threshold,
        names=names,
        probability=model.declaration().score_is_probability,
    )
    result = _with_station_rules(result, model, predicted, target_frr, names, min_confidence, band_rule)
    # The version number comes from the manifest as it is now, not as it was before scoring: a
    # calibration stored meanwhile keeps its version instead of being overwritten.
    if overlap:
        warning = f"{overlap.describe()}: the false-reject rate on new good parts will be higher"
        result = replace(result, warnings=(*result.warnings, warning))
    current = read_bundle(bundle.path)
    history = current.thresholds.add(result.thresholds)
    record = result.to_dict()
    if overlap is not None:
        record["n_training_images"] = len(overlap.files)
    changes: dict[str, Any] = {"thresholds": history, "calibration": record}
    if len(images) >= MIN_REFERENCE:
        # The drift monitor's reference: the same parts, so it describes the line as calibrated.
        changes["monitor"] = build_reference(images, good, model.name)
    update_manifest(bundle, **changes)
    return _with_version(result, history.active.version)


def _with_station_rules(
    result: CalibrationResult,
    model: Any,
    predicted: Any,
    target_frr: float,
    names: Sequence[str] | None,
    min_confidence: float | None,
    band_rule: str = "shared",
) -> CalibrationResult:
    """The anomaly threshold of a station and the category confidence floor of a classifier."""
    from dataclasses import replace

    rules: dict[str, Any] = {}
    if predicted.anomaly_scores is not None and result.thresholds.has_review_band:
        # The review budget is the station's, not each head's: both heads share it.
        from flawscope.decide.station_band import station_band

        band = station_band(
            predicted.scores,
            predicted.anomaly_scores,
            result.thresholds.reject,
            result.thresholds.review,
            band_rule,
        )
        rules["review"], rules["anomaly_reject"] = band.review, band.anomaly_reject
        n = max(len(predicted.scores), 1)
        rules["review_rate"] = (band.stopped - result.n_false_rejects) / n
    elif predicted.anomaly_scores is not None:
        anomaly = calibrate(predicted.anomaly_scores, target_frr=target_frr, names=names)
        rules["anomaly_reject"] = anomaly.reject
    declared = model.declaration()
    if min_confidence is None and len(declared.defect_classes) > 1:
        min_confidence = 0.5
    if min_confidence is not None:
        if not 0.0 <= min_confidence <= 1.0:
            raise InputError("min_confidence", f"must be in [0, 1], got {min_confidence}")
        rules["min_confidence"] = float(min_confidence)
    if not rules:
        return result
    shares = {"review_rate": rules["review_rate"]} if "review_rate" in rules else {}
    return replace(result, thresholds=replace(result.thresholds, **rules), **shares)


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
    return replace(result, thresholds=replace(result.thresholds, version=version))


def set_thresholds_by_hand(
    bundle_path: str | os.PathLike[str], reject: float, review: float | None = None, note: str = ""
) -> Any:
    """Add thresholds set by a person (no calibration images) as the bundle's next version.

    For a model that cannot be calibrated for a false-reject rate: one trained on defect classes
    only (a sorter of defect types scores every part 1, so ``reject`` at or below 1 fails every
    part with its category and boxes). The record says who set it and that no false-reject rate
    stands behind it.

    Args:
        bundle_path: trained bundle.
        reject: reject threshold (raw score), finite and positive.
        review: review threshold, at most ``reject`` (default: no review band).
        note: why, and by whom.

    Returns:
        The thresholds as stored (with their version).

    Raises:
        InputError: naming ``--reject`` or ``--review-threshold`` for a value out of range.
    """
    from flawscope.decide.thresholds import Thresholds

    if not (math.isfinite(reject) and reject > 0):
        raise InputError("--reject", f"must be a finite score above 0, got {reject}")
    if review is not None and not (math.isfinite(review) and 0 < review <= reject):
        raise InputError(
            "--review-threshold", f"must be above 0 and at most --reject {reject:g}, got {review}"
        )
    bundle = read_bundle(bundle_path)
    thresholds = Thresholds.explicit(
        float(reject),
        None if review is None else float(review),
        note=note or "set by hand (flawscope calibrate --reject): no false-reject rate was calibrated",
    )
    history = bundle.thresholds.add(thresholds)
    update_manifest(bundle, thresholds=history)
    return history.active
