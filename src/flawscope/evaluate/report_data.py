"""Inputs of the validation report, checked once so that drawing it cannot fail half-way.

See :mod:`flawscope.evaluate.report` for what the report shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from flawscope.data.imageio import read_image
from flawscope.decide.thresholds import Thresholds
from flawscope.errors import InputError
from flawscope.evaluate.metrics import EvaluationSummary
from flawscope.types import Prediction

CONFIDENCE = 0.95


@dataclass(frozen=True)
class CalibrationInfo:
    """How the thresholds were calibrated (on held-out good parts, not the test set).

    Attributes:
        target_frr: false-reject rate asked for.
        frr_upper_bound: one-sided Clopper-Pearson upper bound of the FRR at calibration.
        n_calibration: number of good images calibrated on.
        confidence: confidence level of the bound.
    """

    target_frr: float
    frr_upper_bound: float | None = None
    n_calibration: int = 0
    confidence: float = CONFIDENCE

    @classmethod
    def from_thresholds(cls, thresholds: Thresholds) -> CalibrationInfo | None:
        """The calibration recorded in ``thresholds`` (``None`` for thresholds set by hand)."""
        if thresholds.method != "calibrated" or thresholds.target_frr is None:
            return None
        return cls(
            thresholds.target_frr, thresholds.frr_upper_bound, thresholds.n_calibration, thresholds.confidence
        )


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything the validation report shows.

    Attributes:
        dataset: dataset name.
        model: model description: ``name``, ``backbone``, ``bundle_version``, ``model_hash`` (other
            keys are shown too).
        paths: ``(N,)`` image files (only the gallery images are read).
        labels: ``(N,)`` 0 for a good part, 1 for a defective one.
        defect_types: ``(N,)`` ``"good"`` or the defect type.
        scores: ``(N,)`` image anomaly scores.
        summary: :func:`~flawscope.evaluate.metrics.evaluate_scores` of these scores.
        maps: N anomaly maps ``(H_i, W_i)`` float32 at image resolution, or ``None``.
        masks: N ground-truth masks ``(H_i, W_i)`` bool (``None`` entries for none), or ``None``.
        thresholds: the decision thresholds, a ``(reject, review)`` pair, or ``None`` when
            uncalibrated.
        calibration: how the thresholds were calibrated; taken from ``thresholds`` when omitted.
        loader: reads one image file, ``path -> (H, W[, 3]) array``.
        created_at: report time, ISO 8601 (default: when written, UTC).
        prediction: the model's full outputs for these parts (class probabilities, defect maps),
            when there is more than ``scores`` and ``maps``; verdicts are then decided on it.
        detection: a detector's boxes against the test split's boxes:
            ``{"iou": 0.5, "map": float, "ap": {class: float | None}}``
            (:func:`~flawscope.evaluate.supervised.detection_map`), or ``None``.
    """

    dataset: str
    model: Mapping[str, object]
    paths: Sequence[str]
    labels: np.ndarray
    defect_types: Sequence[str]
    scores: np.ndarray
    summary: EvaluationSummary
    maps: Sequence[np.ndarray] | None = None
    masks: Sequence[np.ndarray | None] | None = None
    thresholds: Thresholds | tuple[float, float] | None = None
    calibration: CalibrationInfo | None = None
    loader: Callable[[str], np.ndarray] = read_image
    created_at: str | None = None
    prediction: Prediction | None = None
    detection: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        paths = tuple(str(p) for p in self.paths)
        labels = np.asarray(self.labels).reshape(-1)
        scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        types = tuple(str(t) for t in self.defect_types)
        n = len(paths)
        for name, size in (("labels", labels.size), ("scores", scores.size), ("defect_types", len(types))):
            if size != n:
                raise InputError(name, f"has {size} entries for {n} image paths")
        if n == 0:
            raise InputError("paths", "no images: a report needs at least one scored image")
        if not np.isin(labels, (0, 1)).all():
            raise InputError(
                "labels", f"must be 0 (good) or 1 (defect), got values {sorted(set(labels.tolist()))}"
            )
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise InputError(f"scores[{bad[0]}]", f"is {scores[bad[0]]}; {bad.size} scores are not finite")
        labels = labels.astype(np.int64)
        overall = self.summary.overall
        if (overall.n_good, overall.n_defect) != (int((labels == 0).sum()), int((labels == 1).sum())):
            raise InputError(
                "summary",
                f"counts {overall.n_good} good / {overall.n_defect} defective images, but the labels have "
                f"{int((labels == 0).sum())} / {int((labels == 1).sum())}: it was computed on other data",
            )
        for name, items in (("maps", self.maps), ("masks", self.masks)):
            if items is not None and len(items) != n:
                raise InputError(name, f"has {len(items)} entries for {n} images")
        if self.maps is not None:
            for i, amap in enumerate(self.maps):
                if np.ndim(amap) != 2:
                    raise InputError(
                        f"maps[{i}]", f"expected an (H, W) anomaly map, got shape {np.shape(amap)}"
                    )
                mask = None if self.masks is None else self.masks[i]
                if mask is not None and np.shape(mask) != np.shape(amap):
                    raise InputError(
                        f"masks[{i}]", f"shape {np.shape(mask)} differs from its map {np.shape(amap)}"
                    )
        reject, review = threshold_pair(self.thresholds)
        if reject is not None and review is not None and not (math.isfinite(reject) and review <= reject):
            raise InputError(
                "thresholds", f"need a finite reject threshold >= review, got ({reject}, {review})"
            )
        calibration = self.calibration
        if calibration is None and isinstance(self.thresholds, Thresholds):
            calibration = CalibrationInfo.from_thresholds(self.thresholds)
        for name, value in (
            ("paths", paths),
            ("labels", labels),
            ("scores", scores),
            ("defect_types", types),
        ):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "calibration", calibration)
        object.__setattr__(self, "model", {str(k): v for k, v in self.model.items()})


def threshold_pair(thresholds: Thresholds | tuple[float, float] | None) -> tuple[float | None, float | None]:
    """``(reject, review)`` of the report's thresholds, ``(None, None)`` when uncalibrated.

    Raises:
        InputError: for anything but ``Thresholds``, a pair of numbers or ``None``.
    """
    if thresholds is None:
        return None, None
    if isinstance(thresholds, Thresholds):
        return thresholds.reject, thresholds.review
    try:
        reject, review = (float(v) for v in thresholds)
    except (TypeError, ValueError):
        raise InputError(
            "thresholds", f"expected Thresholds or a (reject, review) pair, got {thresholds!r}"
        ) from None
    return reject, review
