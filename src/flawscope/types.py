"""Typed records passed between the stages of flawscope.

Every record is a frozen dataclass so that a stage cannot change what an earlier one produced.
Nothing here imports torch: the runtime and the line use the same records as training.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Sample:
    """One image of a dataset, before it is read.

    Attributes:
        path: image file.
        label: 0 for a good part, 1 for a defective one.
        defect_type: ``"good"`` or the defect category (folder name).
        mask_path: binary ground-truth mask (same size as the image), if any.
    """

    path: str
    label: int
    defect_type: str = "good"
    mask_path: str | None = None


@dataclass(frozen=True)
class Frame:
    """One image of one part, as acquired.

    Attributes:
        part_id: identifier of the part on the line (unique per source).
        image: ``(H, W)`` or ``(H, W, 3)`` array, uint8 or uint16; ``None`` if it could not be read.
        timestamp: acquisition time, seconds since the epoch (UTC).
        source: URI of the source that produced the frame.
        meta: free-form source metadata (file path, camera serial, frame index...).
        error: why the image could not be acquired, if it could not.
    """

    part_id: str
    image: np.ndarray | None
    timestamp: float
    source: str
    meta: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Prediction:
    """Raw output of an anomaly model for a batch of images (no threshold applied).

    Attributes:
        scores: ``(N,)`` float32 image anomaly scores, higher is more anomalous.
        maps: N anomaly maps, each ``(H_i, W_i)`` float32 at the input image's own resolution.
    """

    scores: np.ndarray
    maps: tuple[np.ndarray, ...]


class Outcome(enum.StrEnum):
    """The decision for one part. ``ERROR`` and ``NOT_INSPECTED`` are rejects to the line."""

    PASS = "pass"
    REVIEW = "review"
    FAIL = "fail"
    ERROR = "error"
    NOT_INSPECTED = "not_inspected"

    @property
    def is_accept(self) -> bool:
        """Only ``PASS`` lets a part go on; everything else stops it."""
        return self is Outcome.PASS


@dataclass(frozen=True)
class Region:
    """A connected region of the anomaly map above the reject threshold, in original image pixels.

    Attributes:
        bbox: ``(x0, y0, x1, y1)`` with x1/y1 exclusive.
        area_px: number of pixels in the region.
        peak: highest anomaly map value in the region.
        centroid: ``(x, y)``.
        area_mm2: area in mm², when the station's pixel size is known.
    """

    bbox: tuple[int, int, int, int]
    area_px: int
    peak: float
    centroid: tuple[float, float]
    area_mm2: float | None = None


@dataclass(frozen=True)
class Verdict:
    """The decision for one part: the one record every later stage consumes.

    Attributes:
        outcome: pass / review / fail / error / not_inspected.
        score: raw image anomaly score (NaN when the part was not scored).
        normalized_score: ``score / reject_threshold``; 1.0 means "at the reject threshold".
        regions: defect regions, largest first.
        category: defect category, when a classifier is present.
        threshold_version: version of the thresholds that decided.
        model_hash: SHA-256 of the model bundle's weights.
        reason: why the outcome is what it is (rule fired, error message).
        anomaly_map: ``(H, W)`` float32 map the regions were found on, on the score's scale, at
            the image's resolution, when the inspector gives one. In memory only: the line keeps
            it in the image store for parts that go to review, never in the audit record.
    """

    outcome: Outcome
    score: float
    normalized_score: float
    regions: tuple[Region, ...] = ()
    category: str | None = None
    threshold_version: int | None = None
    model_hash: str = ""
    reason: str = ""
    anomaly_map: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class InspectionRecord:
    """One entry of the audit trail: what was inspected, by which model and thresholds, and the outcome.

    ``seq``, ``prev_hash`` and ``record_hash`` are filled in by the audit log when it appends the
    record (hash chain); everything else is set by the line.

    Attributes:
        part_id: identifier of the part.
        station: inspection station name.
        acquired_at: acquisition time (seconds since the epoch, UTC).
        outcome: the verdict's outcome (``not_inspected`` for a dropped part).
        score: raw anomaly score (NaN when not scored).
        normalized_score: score / reject threshold (NaN when not scored).
        regions: defect regions.
        category: defect category, if any.
        image_sha256: SHA-256 of the image file or pixels ("" if no image).
        image_uri: where the image is stored ("" if it is not).
        model_hash: bundle weights hash.
        model_version: bundle version string.
        threshold_version: thresholds version that decided.
        latency_ms: acquisition-to-verdict latency.
        source: source URI.
        reason: why (error text, rule fired, drop reason).
        kind: ``"inspection"`` or ``"override"``.
        ref_seq: for an override, the ``seq`` of the record it overrides.
        operator: who made an override.
        seq: position in the log (set by the log).
        prev_hash: hash of the previous record (set by the log).
        record_hash: hash of this record (set by the log).
    """

    part_id: str
    station: str
    acquired_at: float
    outcome: Outcome
    score: float = float("nan")
    normalized_score: float = float("nan")
    regions: tuple[Region, ...] = ()
    category: str | None = None
    image_sha256: str = ""
    image_uri: str = ""
    model_hash: str = ""
    model_version: str = ""
    threshold_version: int | None = None
    latency_ms: float = float("nan")
    source: str = ""
    reason: str = ""
    kind: str = "inspection"
    ref_seq: int | None = None
    operator: str = ""
    seq: int | None = None
    prev_hash: str = ""
    record_hash: str = ""
