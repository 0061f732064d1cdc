"""Versioned decision thresholds: what turns an anomaly score into pass / review / fail.

A :class:`Thresholds` record is never edited: a new calibration or a manual change adds a new
version to a :class:`ThresholdHistory`, so every verdict in the audit trail can be traced to the
exact thresholds that produced it. Pure standard library, for the torch-free runtime.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime

from flawscope.errors import InputError

METHODS = ("calibrated", "explicit")
# Hard rules a person may set beside the score thresholds (see Thresholds).
RULES = (
    "min_area_px",
    "min_area_mm2",
    "mm_per_px",
    "max_regions",
    "min_confidence",
    "anomaly_reject",
    "region_level",
)


def utc_now_iso() -> str:
    """The current time as an ISO 8601 string in UTC, to the second (e.g. ``2024-05-01T12:00:00+00:00``)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _finite(name: str, value: object, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"thresholds.{name}", f"must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise InputError(f"thresholds.{name}", f"must be in [{low}, {high}], got {value}")


def _whole(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"thresholds.{name}", f"must be a whole number >= {low}, got {value!r}")


def _check_utc(created_at: object) -> None:
    try:
        offset = datetime.fromisoformat(created_at).utcoffset()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError("thresholds.created_at", f"is not an ISO 8601 time: {created_at!r}") from None
    if offset is None or offset.total_seconds() != 0:
        raise InputError("thresholds.created_at", f"must be in UTC (+00:00), got {created_at!r}")


@dataclass(frozen=True)
class Thresholds:
    """One version of the decision thresholds, on the scale of the model's anomaly score.

    A part with ``score >= reject`` fails, one with ``review <= score < reject`` goes to human
    review, anything lower passes. ``review == reject`` means there is no review band.

    Attributes:
        reject: reject threshold (> 0, finite).
        review: review threshold, ``<= reject``.
        version: version number in its history (0 until added to a :class:`ThresholdHistory`).
        created_at: ISO 8601 time in UTC when the thresholds were made.
        method: ``"calibrated"`` (from held-out good parts) or ``"explicit"`` (set by a person).
        target_frr: false-reject rate asked for at calibration.
        frr_upper_bound: one-sided Clopper-Pearson upper bound of the FRR at ``confidence``.
        confidence: confidence level of the bounds.
        n_calibration: number of good images the thresholds were calibrated on.
        review_rate: share of calibration good parts that fell in the review band.
        min_area_px: a fail needs a region of at least this many pixels (else review); 0: no rule.
        min_area_mm2: same in mm² (needs ``mm_per_px``).
        mm_per_px: the station's pixel size.
        max_regions: more regions than this above the reject threshold is a fail.
        min_confidence: a fail whose defect category has a lower probability (given that the
            part is defective) goes to review instead; for models that classify.
        anomaly_reject: a part that would pass but whose good-parts anomaly score reaches this
            goes to review ("looks unlike the good parts, yet no defect class is confident");
            for stations that have an anomaly head beside a trained one.
        region_level: level at which regions are cut from a defect-probability map (default
            0.5), and the confidence a detected box needs to be a region (default: the level the
            detector learnt on its validation images, else 0.3, see
            :data:`flawscope.decide.verdict.DEFAULT_BOX_LEVEL`); maps on the score's scale are
            always cut at the reject threshold.
        recall: share of calibration defective parts rejected, if defect scores were given.
        recall_ci: two-sided Clopper-Pearson interval of ``recall`` at ``confidence``.
        note: free text (how the thresholds were chosen, by whom).
    """

    reject: float
    review: float
    version: int
    created_at: str
    method: str
    target_frr: float | None = None
    frr_upper_bound: float | None = None
    confidence: float = 0.95
    n_calibration: int = 0
    review_rate: float | None = None
    min_area_px: int = 0
    min_area_mm2: float | None = None
    mm_per_px: float | None = None
    max_regions: int | None = None
    min_confidence: float | None = None
    anomaly_reject: float | None = None
    region_level: float | None = None
    recall: float | None = None
    recall_ci: tuple[float, float] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        _finite("reject", self.reject)
        if self.reject <= 0:
            raise InputError("thresholds.reject", f"must be greater than 0, got {self.reject}")
        _finite("review", self.review)
        if self.review > self.reject:
            raise InputError(
                "thresholds.review", f"{self.review} must not exceed the reject threshold {self.reject}"
            )
        for name in ("version", "n_calibration", "min_area_px"):
            _whole(name, getattr(self, name), 0)
        if self.max_regions is not None:
            _whole("max_regions", self.max_regions, 1)
        if self.method not in METHODS:
            raise InputError("thresholds.method", f"must be one of {METHODS}, got {self.method!r}")
        _check_utc(self.created_at)
        _finite("confidence", self.confidence, 0.0, 1.0)
        if not 0.0 < self.confidence < 1.0:
            raise InputError("thresholds.confidence", f"must be between 0 and 1, got {self.confidence}")
        for name, high in (
            ("target_frr", 1.0),
            ("frr_upper_bound", 1.0),
            ("review_rate", 1.0),
            ("min_area_mm2", None),
            ("recall", 1.0),
        ):
            if getattr(self, name) is not None:
                _finite(name, getattr(self, name), 0.0, high)
        for name in ("min_confidence", "region_level"):
            if getattr(self, name) is not None:
                _finite(name, getattr(self, name), 0.0, 1.0)
        if self.anomaly_reject is not None:
            _finite("anomaly_reject", self.anomaly_reject)
        if self.mm_per_px is not None:
            _finite("mm_per_px", self.mm_per_px)
            if self.mm_per_px <= 0:
                raise InputError("thresholds.mm_per_px", f"must be greater than 0, got {self.mm_per_px}")
        if self.min_area_mm2 is not None and self.mm_per_px is None:
            raise InputError("thresholds.min_area_mm2", "needs the station's pixel size (mm_per_px)")
        if self.recall_ci is not None:
            ci = self.recall_ci
            if len(ci) != 2 or not 0 <= ci[0] <= ci[1] <= 1:
                raise InputError("thresholds.recall_ci", f"must be (low, high) within [0, 1], got {ci}")
            object.__setattr__(self, "recall_ci", (float(ci[0]), float(ci[1])))

    @property
    def sha256(self) -> str:
        """SHA-256 of the canonical JSON of every value (sorted keys, no spaces), ``version`` included.

        Audit records carry it, so thresholds changed under an unchanged version label show.
        """
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def has_review_band(self) -> bool:
        """Whether some scores below the reject threshold go to review."""
        return self.review < self.reject

    @classmethod
    def explicit(
        cls, reject: float, review: float | None = None, note: str = "", **rules: object
    ) -> Thresholds:
        """Thresholds set by hand (version 0 until added to a history).

        Args:
            reject: reject threshold.
            review: review threshold (default: no review band).
            note: who set them and why.
            **rules: hard rules (``min_area_px``, ``min_area_mm2``, ``mm_per_px``, ``max_regions``,
                ``min_confidence``, ``anomaly_reject``, ``region_level``).
        """
        allowed = set(RULES)
        unknown = set(rules) - allowed
        if unknown:
            raise InputError("thresholds", f"unknown rule(s) {sorted(unknown)}; known: {sorted(allowed)}")
        return cls(
            reject=reject,
            review=reject if review is None else review,
            version=0,
            created_at=utc_now_iso(),
            method="explicit",
            note=note,
            **rules,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        data = asdict(self)
        data["recall_ci"] = list(self.recall_ci) if self.recall_ci is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Thresholds:
        """Read thresholds written by :meth:`to_dict`.

        Raises:
            InputError: for unknown or missing keys or invalid values.
        """
        if not isinstance(data, Mapping):
            raise InputError("thresholds", f"expected a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError("thresholds", f"unknown key(s) {sorted(unknown)}")
        missing = {"reject", "review", "version", "created_at", "method"} - set(data)
        if missing:
            raise InputError("thresholds", f"missing key(s) {sorted(missing)}")
        values = dict(data)
        ci = values.get("recall_ci")
        if ci is not None:
            if not isinstance(ci, list | tuple) or len(ci) != 2:
                raise InputError("thresholds.recall_ci", f"must be a pair, got {ci!r}")
            values["recall_ci"] = (ci[0], ci[1])
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ThresholdHistory:
    """All threshold versions of a station, oldest first; adding one never changes another.

    Attributes:
        versions: the thresholds, with strictly increasing version numbers.
    """

    versions: tuple[Thresholds, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(self.versions))
        numbers = [t.version for t in self.versions]
        if any(n < 1 for n in numbers) or any(b <= a for a, b in itertools.pairwise(numbers)):
            raise InputError("thresholds.version", f"versions must be >= 1 and increasing, got {numbers}")

    def add(self, thresholds: Thresholds) -> ThresholdHistory:
        """A new history with ``thresholds`` appended as version ``last + 1`` (1 for the first)."""
        number = self.versions[-1].version + 1 if self.versions else 1
        return ThresholdHistory((*self.versions, replace(thresholds, version=number)))

    @property
    def active(self) -> Thresholds:
        """The latest version.

        Raises:
            InputError: when there is none yet.
        """
        if not self.versions:
            raise InputError("thresholds", "no thresholds have been set: calibrate or set them first")
        return self.versions[-1]

    def get(self, version: int) -> Thresholds:
        """The thresholds with this version number.

        Raises:
            InputError: when there is no such version.
        """
        for t in self.versions:
            if t.version == version:
                return t
        known = [t.version for t in self.versions]
        raise InputError("thresholds.version", f"there is no version {version}; known versions: {known}")

    def __len__(self) -> int:
        return len(self.versions)

    def to_list(self) -> list[dict[str, object]]:
        """JSON-ready form, oldest first."""
        return [t.to_dict() for t in self.versions]

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, object]]) -> ThresholdHistory:
        """Read a history written by :meth:`to_list`."""
        return cls(tuple(Thresholds.from_dict(item) for item in items))
