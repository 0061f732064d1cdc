"""What the line needs from an inspector, and how a frame and its verdict become an audit record."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from flawscope.audit.chain import normalize_record
from flawscope.errors import FlawscopeError
from flawscope.types import Frame, InspectionRecord, Outcome, Provenance, Verdict

logger = logging.getLogger(__name__)

#: Receives each record after it is committed to the audit log (PLC output, MQTT, a UI...).
Publisher = Callable[[InspectionRecord], object]
DROPPED_REASON = "dropped: queue full"
_SAMPLE_DIGITS = 15  # hex digits of the image hash read as a uniform number (60 bits fit a float)


def in_review_sample(image_sha256: str, rate: float) -> bool:
    """Whether a passed part belongs to the random sample that people review (to measure escapes).

    The choice is a function of the image's SHA-256, so the line (which keeps the sampled parts'
    maps) and the review queue agree without talking, and nobody can steer which parts are sampled.

    Args:
        image_sha256: the record's ``image_sha256`` (hex); no image, no sample.
        rate: fraction of passed parts to sample, in [0, 1].
    """
    if rate <= 0 or len(image_sha256) < _SAMPLE_DIGITS:
        return False
    try:
        value = int(image_sha256[:_SAMPLE_DIGITS], 16)
    except ValueError:
        return False
    return value < rate * 16**_SAMPLE_DIGITS


class InspectorLike(Protocol):
    """The part of :class:`flawscope.runtime.Inspector` the line uses.

    ``inspect_many`` returns one verdict per image, in order; a ``None`` or bad image gives an
    ``error`` verdict.
    """

    @property
    def model_hash(self) -> str:  # noqa: D102
        ...

    @property
    def version(self) -> str:  # noqa: D102
        ...

    @property
    def provenance(self) -> Provenance:
        """What judges the parts (model, thresholds and graph hashes, signer), copied into every record."""
        ...

    def inspect_many(self, images: Sequence[np.ndarray | None]) -> list[Verdict]:  # noqa: D102
        ...


class PartObserver(Protocol):
    """What the line needs from a monitor that sees every judged part (the drift monitor)."""

    def observe_many(  # noqa: D102
        self, images: Sequence[np.ndarray | None], verdicts: Sequence[Verdict], part_ids: Sequence[str]
    ) -> object: ...


def threshold_version(inspector: InspectorLike) -> int | None:
    """The active threshold version of an inspector, when it has one."""
    thresholds = getattr(inspector, "thresholds", None)
    version = getattr(thresholds, "version", None)
    return version if isinstance(version, int) else None


def error(reason: str, inspector: InspectorLike, outcome: Outcome = Outcome.ERROR) -> Verdict:
    """A verdict for a part that was not judged (``error`` or ``not_inspected``): a reject."""
    nan = float("nan")
    return Verdict(
        outcome,
        nan,
        nan,
        model_hash=inspector.model_hash,
        reason=reason,
        threshold_version=threshold_version(inspector),
    )


def judge(frames: Sequence[Frame], inspector: InspectorLike) -> list[Verdict]:
    """Verdicts for a batch: frames without an image are errors; the rest go through the inspector.

    Never raises for a part's problem: an inspector that raises or miscounts gives every part of the
    batch an ``error`` verdict. Configuration errors of the inspector (``BundleError``) are raised,
    after which the caller records the batch as errors and stops.
    """
    verdicts: list[Verdict | None] = [
        None if f.image is not None else error(f.error or "no image", inspector) for f in frames
    ]
    slots = [i for i, v in enumerate(verdicts) if v is None]
    if slots:
        results = inspector.inspect_many([frames[i].image for i in slots])
        if len(results) != len(slots):
            raise RuntimeError(f"the inspector returned {len(results)} verdicts for {len(slots)} images")
        for i, verdict in zip(slots, results, strict=True):
            if not isinstance(verdict, Verdict):
                raise RuntimeError(f"the inspector returned a {type(verdict).__name__}, not a Verdict")
            verdicts[i] = verdict
    return [v for v in verdicts if v is not None]


def _confidence(verdict: Verdict) -> float:
    """The verdict's category probability as the record stores it (0: none, or not a number)."""
    value = verdict.confidence
    return float(value) if value is not None and math.isfinite(value) and verdict.category else 0.0


def make_record(
    frame: Frame,
    verdict: Verdict,
    inspector: InspectorLike,
    *,
    station: str,
    latency_ms: float,
    image_uri: str = "",
    image_sha256: str = "",
    note: str = "",
) -> InspectionRecord:
    """The audit record of one part, checked so that the audit log will take it.

    A record the log would refuse (a field it cannot store) is replaced by an ``error`` record of
    the same part that says why, so the part is still recorded, as a reject.
    """
    reason = verdict.reason if not note else f"{verdict.reason}; {note}" if verdict.reason else note
    judged_by = inspector.provenance
    record = InspectionRecord(
        part_id=frame.part_id,
        station=station,
        acquired_at=frame.timestamp,
        outcome=verdict.outcome,
        score=verdict.score,
        normalized_score=verdict.normalized_score,
        regions=verdict.regions,
        category=verdict.category,
        category_confidence=_confidence(verdict),
        image_sha256=image_sha256,
        image_uri=image_uri,
        model_hash=verdict.model_hash or inspector.model_hash,
        model_version=judged_by.model_version,
        threshold_version=verdict.threshold_version,
        latency_ms=latency_ms,
        source=frame.source,
        reason=reason,
        threshold_sha256=judged_by.threshold_sha256,
        graph_sha256=judged_by.graph_sha256,
        signer=judged_by.signer,
        allow_unsigned=judged_by.allow_unsigned,
    )
    try:
        return normalize_record(record)
    except FlawscopeError as exc:
        logger.error(
            "part %r: record refused by the audit schema (%s); recording an error instead", frame.part_id, exc
        )
        acquired = (
            frame.timestamp
            if isinstance(frame.timestamp, float) and math.isfinite(frame.timestamp)
            else time.time()
        )
        return normalize_record(
            InspectionRecord(
                part_id=_printable(frame.part_id),
                station=station,
                acquired_at=acquired,
                outcome=Outcome.ERROR,
                model_hash=inspector.model_hash,
                model_version=judged_by.model_version,
                source=_printable(frame.source),
                reason=f"the record could not be stored as made: {exc}",
                threshold_sha256=judged_by.threshold_sha256,
                graph_sha256=judged_by.graph_sha256,
                signer=judged_by.signer,
                allow_unsigned=judged_by.allow_unsigned,
            )
        )


def _printable(value: object) -> str:
    return str(value).replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")
