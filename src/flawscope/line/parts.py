"""A part's bookkeeping on the line: from its verdict to its audit record.

The threads of :mod:`flawscope.line.loop` move :class:`Part` objects; :class:`PartRecorder` decides
which anomaly maps are worth holding, stores each part's image (and the map of a part that goes
to review) and makes the record that the audit log commits.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from flawscope.line.records import InspectorLike, in_review_sample, make_record
from flawscope.line.settings import LineSettings
from flawscope.line.store import ImageStore, image_sha256, write_map
from flawscope.types import Frame, InspectionRecord, Outcome, Verdict

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Part:
    """A part on its way through the line (mutable; the line's own)."""

    frame: Frame
    acquired: float  # perf_counter when taken from the source
    verdict: Verdict | None = None
    judged: float = math.nan
    dropped: bool = False


class PartRecorder:
    """Makes the audit record of each judged part, keeping its image and the maps reviewers need.

    Args:
        inspector: whose model and version the records name.
        settings: the line's checked settings (station, ``keep_maps``, ``review_sample``).
        store: where images are kept; None: none kept (and no maps).
        on_store_failure: called with the reason when the image store cannot be written (the line
            stops); the parts after it are recorded without their images.
    """

    def __init__(
        self,
        inspector: InspectorLike,
        settings: LineSettings,
        store: ImageStore | None,
        on_store_failure: Callable[[str], object],
    ) -> None:
        self.inspector = inspector
        self.station = settings.station
        self.store = store
        self.keep_maps = settings.keep_maps if store is not None else frozenset()
        self.review_sample = settings.review_sample if store is not None else 0.0
        self.store_error = ""
        self._on_store_failure = on_store_failure

    def trim(self, verdict: Verdict) -> Verdict:
        """The verdict without its anomaly map when nobody will keep it (not held in the queues)."""
        wanted = verdict.outcome.value in self.keep_maps or (
            self.review_sample > 0 and verdict.outcome is Outcome.PASS
        )
        if not wanted and verdict.anomaly_map is not None:
            return replace(verdict, anomaly_map=None)
        return verdict

    def to_record(self, part: Part) -> InspectionRecord:
        """Store the part's image (and map) and make its record; a store failure is noted on it."""
        frame, uri, digest, note = part.frame, "", "", ""
        if self.store is not None and not part.dropped and not self.store_error:
            try:
                uri, digest = self.store.put(frame)
            except ValueError as exc:  # these pixels cannot be encoded: this part's problem only
                note = f"image not stored: {exc}"
            except OSError as exc:
                self.store_error = (
                    f"{exc.strerror or exc} ({getattr(exc, 'filename', '') or self.store.root})"
                )
                self._on_store_failure(
                    f"the image store {self.store.root} cannot be written: {self.store_error}"
                )
        if self.store is not None and self.store_error and not uri and not part.dropped:
            note = f"image not stored: {self.store_error}"
        if not digest:
            try:
                digest = image_sha256(frame)
            except Exception as exc:
                logger.warning("part %s: cannot hash the image (%s)", frame.part_id, exc)
        assert part.verdict is not None
        if uri:
            note = "; ".join(n for n in (note, self._keep_map(uri, digest, part.verdict)) if n)
        latency = math.nan if part.dropped else (part.judged - part.acquired) * 1000
        return make_record(
            frame,
            part.verdict,
            self.inspector,
            station=self.station,
            latency_ms=latency,
            image_uri=uri,
            image_sha256=digest,
            note=note,
        )

    def _keep_map(self, uri: str, digest: str, verdict: Verdict) -> str:
        """Keep the anomaly map of a part that goes to review; a note for the record if it cannot be."""
        amap, outcome = verdict.anomaly_map, verdict.outcome
        if amap is None or not (
            outcome.value in self.keep_maps
            or (outcome is Outcome.PASS and in_review_sample(digest, self.review_sample))
        ):
            return ""
        try:
            write_map(uri, amap, verdict.score / verdict.normalized_score)
        except (OSError, ValueError, ZeroDivisionError) as exc:
            logger.warning("anomaly map of %s not kept: %s", uri, exc)
            return f"anomaly map not kept: {exc}"
        return ""
