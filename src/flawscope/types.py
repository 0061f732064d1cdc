"""Typed records passed between the stages of flawscope.

Every record is a frozen dataclass so that a stage cannot change what an earlier one produced.
Nothing here imports torch: the runtime and the line use the same records as training.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
class Targets:
    """What is known about each training image, aligned with the images.

    Attributes:
        classes: per image, ``"good"`` or its defect class.
        masks: per image, an ``(H, W)`` bool defect mask, or ``None`` where none is known (a
            good image's mask is all False); ``()`` when no image has one.
        boxes: per image, its boxes ``(x0, y0, x1, y1, class)`` in image pixels (x1/y1
            exclusive); ``()`` when no image has any.
        groups: per image, the physical item it shows (images of one item are never split
            apart); ``()`` when unknown.
        probabilities: per image, the labelled probability that it is defective (annotators'
            agreement or confidence, e.g. ELPV's 0, 1/3, 2/3, 1), which ``soft_labels`` trains
            on; ``()`` when unknown.
    """

    classes: tuple[str, ...]
    masks: tuple[np.ndarray | None, ...] = ()
    boxes: tuple[tuple[tuple[float, float, float, float, str], ...], ...] = ()
    groups: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.classes)
        for name in ("masks", "boxes", "groups", "probabilities"):
            items = getattr(self, name)
            if items and len(items) != n:
                raise ValueError(f"Targets: {len(items)} {name} for {n} images")

    def __len__(self) -> int:
        return len(self.classes)

    def select(self, index: Sequence[int]) -> Targets:
        """The targets of a subset of the images, in the given order."""
        rows = [int(i) for i in index]
        return Targets(
            tuple(self.classes[i] for i in rows),
            tuple(self.masks[i] for i in rows) if self.masks else (),
            tuple(self.boxes[i] for i in rows) if self.boxes else (),
            tuple(self.groups[i] for i in rows) if self.groups else (),
            tuple(self.probabilities[i] for i in rows) if self.probabilities else (),
        )


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
    """A model's finished outputs for a batch of images (no threshold applied).

    Every field but ``scores`` is filled only when the model declares the output it comes from
    (:class:`flawscope.declaration.ModelDeclaration`); all maps are at each image's own size.

    Attributes:
        scores: ``(N,)`` float32 decision scores, higher is more defective: the anomaly score
            (peak of the smoothed anomaly map) or the defect probability, whichever the model
            declares as its decision. Thresholds apply to these.
        maps: N maps ``(H_i, W_i)`` float32 on which regions are found (the anomaly map, or the
            defect-probability map of a segmenting model); ``()`` when the model has none.
        map_scale: ``"score"`` when a map is on the scores' scale (an image's score is its
            map's peak, so regions are found at the reject threshold), ``"probability"`` when it
            holds per-pixel defect probabilities (regions at a probability level).
        anomaly_scores: ``(N,)`` anomaly scores of a model that also has a good-parts head beside
            its decision (a station); ``None`` otherwise.
        anomaly_maps: N anomaly maps of such a model (``()`` otherwise).
        class_probs: ``(N, K)`` class probabilities, or ``None``.
        classes: the ``K`` class names (``"good"`` among them when the model knows good parts).
        class_maps: N ``(H_i, W_i)`` int per-pixel class indices into ``classes``, or ``()``.
        boxes: per image, its detected boxes ``(x0, y0, x1, y1, confidence, class)`` in image
            pixels, highest confidence first, from a model with a ``boxes`` output; ``()`` otherwise.
        box_level: the confidence a box needs to be a region, as the model learnt it on its
            validation images (the declaration's ``extra["box_level"]``); ``None``: the default.
    """

    scores: np.ndarray
    maps: tuple[np.ndarray, ...] = ()
    map_scale: str = "score"
    anomaly_scores: np.ndarray | None = None
    anomaly_maps: tuple[np.ndarray, ...] = ()
    class_probs: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    class_maps: tuple[np.ndarray, ...] = ()
    boxes: tuple[tuple[tuple[float, float, float, float, float, str], ...], ...] = ()
    box_level: float | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, index: Sequence[int] | np.ndarray) -> Prediction:
        """The same outputs for a subset of the parts, in the given order."""
        rows = [int(i) for i in np.asarray(index).reshape(-1)]

        def pick(items: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
            return tuple(items[i] for i in rows) if items else ()

        return Prediction(
            scores=np.asarray(self.scores)[rows],
            maps=pick(self.maps),
            map_scale=self.map_scale,
            anomaly_scores=None if self.anomaly_scores is None else np.asarray(self.anomaly_scores)[rows],
            anomaly_maps=pick(self.anomaly_maps),
            class_probs=None if self.class_probs is None else np.asarray(self.class_probs)[rows],
            classes=self.classes,
            class_maps=pick(self.class_maps),
            boxes=tuple(self.boxes[i] for i in rows) if self.boxes else (),
            box_level=self.box_level,
        )


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
        category: defect class of the region, when the model segments by class.
    """

    bbox: tuple[int, int, int, int]
    area_px: int
    peak: float
    centroid: tuple[float, float]
    area_mm2: float | None = None
    category: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The decision for one part: the one record every later stage consumes.

    Attributes:
        outcome: pass / review / fail / error / not_inspected.
        score: raw image anomaly score (NaN when the part was not scored).
        normalized_score: ``score / reject_threshold``; 1.0 means "at the reject threshold".
        regions: defect regions, largest first.
        category: the part's category when the model classifies: ``"good"`` for a pass, else
            the most likely defect class.
        threshold_version: version of the thresholds that decided.
        model_hash: SHA-256 of the model bundle's weights.
        reason: why the outcome is what it is (rule fired, error message).
        anomaly_map: ``(H, W)`` float32 map the regions were found on (the anomaly map on the
            score's scale, or a defect-probability map), at the image's resolution, when the
            inspector gives one. In memory only: the line keeps it in the image store for parts
            that go to review, never in the audit record.
        confidence: probability of ``category`` (for a defect class: given that the part is
            defective), when the model classifies.
        anomaly_score: the good-parts head's score of a station (``None`` without one).
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
    confidence: float | None = None
    anomaly_score: float | None = None


@dataclass(frozen=True)
class Provenance:
    """What judges the parts of an inspector: the audit record's fields naming model, thresholds, graph.

    Attributes:
        model_hash: SHA-256 of the bundle's weights.
        model_version: model hash prefix and the threshold version in use (``abc123def456.t2``).
        threshold_version: the threshold version in use (``None``: no thresholds).
        threshold_sha256: SHA-256 of those threshold values (:attr:`Thresholds.sha256`).
        graph_sha256: SHA-256 of the ONNX graph file that scores.
        signer: id of the key whose signature of the bundle was verified ("" when none was).
        allow_unsigned: the bundle was loaded with ``allow_unsigned`` (development).
    """

    model_hash: str
    model_version: str
    threshold_version: int | None = None
    threshold_sha256: str = ""
    graph_sha256: str = ""
    signer: str = ""
    allow_unsigned: bool = False


#: Metadata key of an :class:`InspectionRecord` field: the audit schema version that added it.
SINCE = "audit_since"
#: Metadata key: ``False`` for the one field outside the record's hash (``record_hash`` itself).
HASHED = "audit_hashed"


def added(version: int, default: object) -> Any:
    """Declare an audit record field added by audit schema ``version`` (with its default).

    The audit schema (:mod:`flawscope.audit.fields`) is derived from :class:`InspectionRecord`:
    a new field is one line here, ``name: type = added(N, default)``, plus the migration ``N`` that
    adds its column (:mod:`flawscope.audit.migrations`, one line too). Records written before
    the field existed hash as they did: a later field at its default is left out of the hash.
    """
    return field(default=default, metadata={SINCE: version})


@dataclass(frozen=True)
class InspectionRecord:
    """One entry of the audit trail: what was inspected, by which model and thresholds, and the outcome.

    This dataclass *is* the declaration of the audit schema: each field's name, type (and so its
    column type and nullability), default, whether it is hashed and the schema version that added
    it. ``seq``, ``prev_hash`` and ``record_hash`` are filled in by the audit log when it appends
    the record (hash chain); everything else is set by the line (or the person, for the kinds of
    record a person makes).

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
        model_version: bundle version string (model hash prefix and the threshold version used).
        threshold_version: thresholds version that decided.
        latency_ms: acquisition-to-verdict latency.
        source: source URI.
        reason: why (error text, rule fired, drop reason).
        kind: ``"inspection"``, ``"override"``, ``"review"`` or ``"model"`` (see
            :mod:`flawscope.audit.kinds`).
        ref_seq: for a record about another record (override, review), the ``seq`` of that record.
        operator: who made an override or review.
        threshold_sha256: SHA-256 of the canonical JSON of the threshold values that decided
            (schema 2), so a changed threshold shows in the trail even under the same version label.
        graph_sha256: SHA-256 of the ONNX graph file that scored the part (schema 2).
        signer: id of the key whose signature of the bundle was verified ("" when none was; schema 2).
        allow_unsigned: the bundle was loaded with ``--allow-unsigned`` (development; schema 2).
        web_roll: the roll (coil) of a line-scan web the record is about ("" for discrete parts;
            schema 6).
        web_along_m: where what the record is about is (the centre of a web frame or a
            not-inspected stretch, a defect's highest anomaly value), metres along the web from
            the roll start (schema 6). The ``web_*`` numbers mean something only where
            ``web_roll`` is set; they are 0 for discrete parts (a default NaN would make a record
            unequal to itself).
        web_across_mm: the same across the web, mm from the web's first pixel (schema 6).
        web_length_mm: its extent along the web, mm (schema 6).
        web_width_mm: its extent across the web, mm (schema 6).
        category_confidence: the probability of ``category`` (for a defect class: given that the
            part is defective), what a reviewer weighs; 0 when the model names no category with a
            probability (schema 7; 0, not NaN, for the reason given for the ``web_*`` numbers).
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
    threshold_sha256: str = added(2, "")
    graph_sha256: str = added(2, "")
    signer: str = added(2, "")
    allow_unsigned: bool = added(2, False)
    web_roll: str = added(6, "")
    web_along_m: float = added(6, 0.0)
    web_across_mm: float = added(6, 0.0)
    web_length_mm: float = added(6, 0.0)
    web_width_mm: float = added(6, 0.0)
    category_confidence: float = added(7, 0.0)
    seq: int | None = None
    prev_hash: str = ""
    record_hash: str = field(default="", metadata={HASHED: False})
