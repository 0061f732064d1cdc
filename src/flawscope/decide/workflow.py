"""Calibrating a bundle: score held-out good images, choose thresholds, append a version.

The torch model scores the images so a trained bundle can be calibrated before export; the
thresholds are stored as a new version in the bundle's manifest (never an edit of an old one).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
from rich.table import Table

from flawscope.bundle import update_manifest
from flawscope.decide.calibration import CalibrationResult, calibrate
from flawscope.decide.thresholds import ThresholdHistory
from flawscope.errors import InputError


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

    if len(good_images) < 10:
        raise InputError("calibration images", f"calibration needs at least 10 good images, got {len(good_images)}")
    model, bundle = load_model(bundle_path)
    good = model.predict(good_images, progress=progress).scores
    defects = model.predict(defect_images).scores if len(defect_images) else None
    result = calibrate(
        good, target_frr=target_frr, defect_scores=defects, review_rate=review_rate,
        review_threshold=review_threshold, names=names,
    )
    history = ThresholdHistory.from_list(bundle.thresholds).add(result.thresholds)
    update_manifest(bundle, thresholds=history.to_list(), calibration=result.to_dict())
    return _with_version(result, history.active.version)


def _with_version(result: CalibrationResult, version: int) -> CalibrationResult:
    from dataclasses import replace

    return replace(result, thresholds=replace(result.thresholds, version=version))


def calibration_table(result: CalibrationResult) -> Table:
    """A Rich table of what a calibration achieved, with its bounds."""
    t = result.thresholds
    table = Table(title=f"Calibrated thresholds (version {t.version})")
    table.add_column("item")
    table.add_column("value")
    table.add_row("reject threshold", f"{t.reject:.4g}")
    table.add_row("review threshold", f"{t.review:.4g}" + ("" if t.has_review_band else " (no review band)"))
    table.add_row("calibration images (good)", str(result.n_good))
    table.add_row("false rejects on them", f"{result.n_false_rejects} ({result.empirical_frr:.2%})")
    table.add_row(
        "FRR upper bound (95%, Clopper-Pearson)",
        f"{result.frr_upper_bound:.2%} [{result.guarantee}: target {t.target_frr:.2%}]",
    )
    table.add_row("smallest target this set supports", f"{result.min_supported_frr:.2%}")
    if result.recall is not None and result.recall_ci is not None:
        table.add_row("recall on defects", f"{result.recall:.2%} (95% CI {result.recall_ci[0]:.2%}-{result.recall_ci[1]:.2%})")
    for warning in result.warnings:
        table.add_row("[yellow]warning[/yellow]", warning)
    return table
