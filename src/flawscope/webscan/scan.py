"""Inspecting a line-scan web: frames judged, defects merged across frames, a roll summary.

:class:`WebScan` reads a :class:`~flawscope.acquire.rows.RowSource`'s assembled frames, judges
them in batches with an inspector (:class:`flawscope.runtime.Inspector`), merges the regions of
frames that fail or go to review (placed at their maps' peaks, :mod:`flawscope.webscan.regions`)
into web defects (:class:`~flawscope.webscan.merge.DefectMerger`)
and, given an audit log, records every frame, every not-inspected stretch and every defect there,
with their web coordinates (``web_*`` fields). A stretch of web that was not inspected is a record
of outcome ``not_inspected``, never a pass. A frame that fails without a region (its score is
above the threshold but no pixel is) is a defect at its map's peak, so it is not lost either.

With an :class:`~flawscope.webscan.edges.EdgeConfig` (the web's edges found per frame, a margin
inside them) only each frame's inspected band is judged: the model scores the whole frame, the
prediction is cut to the band and the verdict decided from that (the same
:func:`~flawscope.decide.verdict.decide_many`), so nothing outside it becomes a defect. Each frame
record carries its band (``web_across_mm``, ``web_width_mm``) and the width left out in its reason;
the roll summary gives the mean inspected width and the edge width not inspected; a frame in which
no web is found is a not-inspected stretch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from flawscope.acquire.assembly import WebFrame
from flawscope.acquire.rows import RowSource, WebGeometry
from flawscope.decide.verdict import decide_many, error_verdict
from flawscope.errors import BundleError, InputError
from flawscope.line.records import InspectorLike, error, judge, make_record
from flawscope.types import Frame, InspectionRecord, Outcome, Region, Verdict
from flawscope.webscan.edges import EdgeConfig, inspected_band, restrict_to_band
from flawscope.webscan.merge import DefectMerger
from flawscope.webscan.records import RollSummary, WebDefect, WebStretch
from flawscope.webscan.regions import defect_regions
from flawscope.webscan.register import Registration, measure_offset
from flawscope.webscan.summary import summarize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanResult:
    """Everything a web scan found.

    Attributes:
        summary: the roll's summary (length, yield, not-inspected metres...).
        defects: every defect, once, in web coordinates.
        stretches: every not-inspected stretch.
        geometry: the web's geometry.
        bands: ``(start_m, end_m, from_mm, to_mm)`` of each inspected frame whose band is
            narrower than the web (its edges found or a margin set); () when all was inspected.
    """

    summary: RollSummary
    defects: tuple[WebDefect, ...]
    stretches: tuple[WebStretch, ...]
    geometry: WebGeometry
    bands: tuple[tuple[float, float, float, float], ...] = ()
    registration: Registration | None = None


class WebScan:
    """Inspect one roll from a line-scan source.

    Args:
        source: the line-scan source (its frames carry their web position).
        inspector: judges frames (a loaded deployable bundle).
        audit: where records go (None: nowhere; the result is still returned).
        station: the station name in audit records.
        batch: frames judged per inspector call.
        segment_m: segment length of the length-based yield.
        join_px: regions this close (pixels) are one defect.
        on_defect: called with each defect as soon as it is closed (a UI, a marker printer).
        edges: the inspected width of each frame (None: every column; see
            :class:`~flawscope.webscan.edges.EdgeConfig`); needs an inspector with
            ``score_many`` and ``thresholds`` (the runtime's :class:`~flawscope.runtime.Inspector`).
        register: measure where the model's maps put a defect on the first frame and correct
            every position by it (:mod:`flawscope.webscan.register`; needs ``score_many``).
    """

    def __init__(
        self,
        source: RowSource,
        inspector: InspectorLike,
        *,
        audit: Any = None,
        station: str = "web",
        batch: int = 8,
        segment_m: float = 1.0,
        join_px: int = 2,
        on_defect: Callable[[WebDefect], object] | None = None,
        edges: EdgeConfig | None = None,
        register: bool = True,
    ) -> None:
        self.source = source
        self.inspector = inspector
        self.audit = audit
        self.station = station
        self.batch = max(1, batch)
        self.segment_m = segment_m
        self.join_px = join_px
        self.on_defect = on_defect
        self.edges = edges if edges is not None and edges.active else None
        if self.edges is not None and not (
            hasattr(inspector, "score_many") and hasattr(inspector, "thresholds")
        ):
            raise InputError(
                "edges", "an inspected width needs the runtime's Inspector (score_many, thresholds)"
            )
        self.register = register and hasattr(inspector, "score_many")
        self.registration: Registration | None = None
        self.frames_inspected = 0
        self._bands: dict[int, tuple[int, int]] = {}  # frame index -> inspected columns
        self._band_px: list[int] = []  # inspected width of every inspected frame
        self._band_log: list[tuple[float, float, float, float]] = []
        self._seq_of: dict[int, int] = {}  # first row of a recent frame -> its record's seq

    def _web(self, record: InspectionRecord, box: tuple[float, float, float, float]) -> InspectionRecord:
        """The record with its web coordinates: ``box`` is (row0, row1, col0, col1) in web pixels."""
        g = self.source.geometry()
        row0, row1, col0, col1 = box
        return dataclasses.replace(
            record,
            web_roll=self.source.roll,
            web_along_m=g.along_m((row0 + row1) / 2.0),
            web_across_mm=g.across_mm((col0 + col1) / 2.0),
            web_length_mm=(row1 - row0) * g.mm_per_row,
            web_width_mm=(col1 - col0) * g.mm_per_px,
        )

    def _frame_record(self, frame: WebFrame, verdict: Verdict, latency_ms: float) -> InspectionRecord:
        part = Frame(self.source.part_id(frame), None, frame.timestamp or time.time(), self.source.uri)
        record = make_record(part, verdict, self.inspector, station=self.station, latency_ms=latency_ms)
        width = self.source.geometry().width_px
        first, end = self._bands.get(frame.index, (0, width))
        if (first, end) != (0, width) and record.outcome is not Outcome.NOT_INSPECTED:
            g = self.source.geometry()
            left, right = g.across_mm(first), g.across_mm(width - end)
            note = f"inspected {g.across_mm(first):.1f}-{g.across_mm(end):.1f} mm across; not inspected: "
            note += f"{left:.1f} mm at the first edge, {right:.1f} mm at the last"
            record = dataclasses.replace(record, reason=f"{record.reason}; {note}" if record.reason else note)
        return self._web(record, (frame.first_row, frame.end_row, first, end))

    def _defect_record(self, defect: WebDefect) -> InspectionRecord:
        provenance = self.inspector.provenance
        ref = self._seq_of.get(defect.frames[0])
        region = Region(
            (defect.col0, defect.row0, defect.col1, defect.row1),
            (defect.col1 - defect.col0) * (defect.row1 - defect.row0),
            defect.peak,
            ((defect.col0 + defect.col1) / 2.0, (defect.row0 + defect.row1) / 2.0),
            category=defect.category,
        )
        record = InspectionRecord(
            part_id=f"{defect.roll}-d{defect.number:06d}",
            station=self.station,
            acquired_at=time.time(),
            outcome=Outcome.FAIL,
            score=defect.peak,
            regions=(region,),
            category=defect.category,
            model_hash=provenance.model_hash,
            model_version=provenance.model_version,
            threshold_version=provenance.threshold_version,
            source=self.source.uri,
            reason=f"web defect seen in {len(defect.frames)} frame(s) from row {defect.frames[0]}",
            kind="web_defect",
            ref_seq=ref,
            threshold_sha256=provenance.threshold_sha256,
            graph_sha256=provenance.graph_sha256,
            signer=provenance.signer,
            allow_unsigned=provenance.allow_unsigned,
        )
        placed = self._web(record, (defect.row0, defect.row1, defect.col0, defect.col1))
        # A defect is where its highest anomaly value is (its box is widened by the map's blur).
        return dataclasses.replace(placed, web_along_m=defect.along_m, web_across_mm=defect.across_mm)

    def _judge(self, frames: list[WebFrame]) -> tuple[list[Verdict], float]:
        began = time.perf_counter()
        if self.edges is not None:
            verdicts = self._judge_bands(frames)
        else:
            parts = [Frame(str(f.index), f.image, f.timestamp, self.source.uri) for f in frames]
            verdicts = judge(parts, self.inspector)
        return verdicts, (time.perf_counter() - began) * 1000.0

    def _judge_bands(self, frames: list[WebFrame]) -> list[Verdict]:
        """Verdicts of frames judged on their inspected bands alone (scored whole, decided on the band)."""
        inspector: Any = self.inspector
        thresholds = inspector.thresholds
        if thresholds is None:
            raise BundleError(
                "the bundle has no calibrated thresholds; run 'flawscope calibrate' before export"
            )
        try:
            prediction = inspector.score_many([f.image for f in frames])
            bands = [self._bands[f.index] for f in frames]
            area = int(getattr(inspector.preprocessing, "score_area", 0))
            cut = restrict_to_band(prediction, bands, area)
        except BundleError:
            raise
        except Exception as exc:  # a failed inference rejects the frames, it does not stop the roll
            logger.exception("inference failed")
            return [
                error_verdict(f"inference failed: {exc}", self.inspector.model_hash, thresholds.version)
            ] * len(frames)
        decided = decide_many(cut, thresholds, self.inspector.model_hash)
        return [dataclasses.replace(v, anomaly_map=m) for v, m in zip(decided, cut.maps, strict=True)]

    def _split_bands(self, batch: list[WebFrame]) -> list[WebFrame]:
        """Find each frame's inspected band; a frame with none left becomes a not-inspected stretch."""
        if self.edges is None:
            return batch
        mm_per_px = self.source.geometry().mm_per_px
        out = []
        for frame in batch:
            if frame.image is not None:
                band = inspected_band(frame.image, self.edges, mm_per_px)
                if band is None:
                    why = "no web found between the edges" if self.edges.find else "narrower than the margins"
                    frame = dataclasses.replace(frame, image=None, reason=f"not inspected: {why}")
                else:
                    g = self.source.geometry()
                    self._bands[frame.index] = band
                    self._band_px.append(band[1] - band[0])
                    self._band_log.append(
                        (
                            g.along_m(frame.first_row),
                            g.along_m(frame.end_row),
                            g.across_mm(band[0]),
                            g.across_mm(band[1]),
                        )
                    )
            out.append(frame)
        return out

    def _store(self, records: list[InspectionRecord]) -> list[InspectionRecord]:
        if self.audit is None or not records:
            return records
        stored: list[InspectionRecord] = self.audit.append_many(records)
        return stored

    def _batches(self) -> Iterator[list[WebFrame]]:
        pending: list[WebFrame] = []
        for frame in self.source.web_frames():
            pending.append(frame)
            if sum(f.inspectable for f in pending) >= self.batch:
                yield pending
                pending = []
        if pending:
            yield pending

    def run(self) -> ScanResult:
        """Inspect the whole roll (until the source ends or is closed)."""
        began = time.monotonic()
        defects: list[WebDefect] = []
        stretches: list[WebStretch] = []
        merger: DefectMerger | None = None
        first_row: int | None = None
        last_row = 0
        for batch in self._batches():
            batch = self._split_bands(batch)
            geometry = self.source.geometry()
            merger = merger or DefectMerger(geometry, self.source.roll, self.join_px)
            inspectable = [f for f in batch if f.inspectable]
            if self.register and self.registration is None and inspectable:
                self._measure_registration(inspectable[0])
            verdicts, latency = self._judge(inspectable) if inspectable else ([], 0.0)
            judged = dict(zip((f.index for f in inspectable), verdicts, strict=True))
            records = []
            for frame in batch:
                first_row = frame.first_row if first_row is None else first_row
                last_row = max(last_row, frame.end_row)
                if frame.inspectable:
                    records.append(self._frame_record(frame, judged[frame.index], latency))
                else:
                    stretches.append(
                        WebStretch(
                            frame.first_row,
                            frame.end_row,
                            geometry.along_m(frame.first_row),
                            geometry.along_m(frame.end_row),
                            frame.reason,
                        )
                    )
                    verdict = error(f"not inspected: {frame.reason}", self.inspector, Outcome.NOT_INSPECTED)
                    records.append(self._frame_record(frame, verdict, math.nan))
            for stored, frame in zip(self._store(records), batch, strict=True):
                if stored.seq is not None:
                    self._seq_of[frame.first_row] = stored.seq
            self.frames_inspected += len(inspectable)
            closed: list[WebDefect] = []
            for frame in batch:
                regions = (
                    defect_regions(judged[frame.index], frame.image.shape, self._offset())
                    if frame.image is not None
                    else ()
                )
                closed.extend(merger.add(frame.first_row, regions))
            self._close(closed, defects)
            self._forget(merger, batch[-1].first_row)
            for frame in batch:
                self._bands.pop(frame.index, None)
        if merger is not None:
            self._close(list(merger.finish()), defects)
        seconds = time.monotonic() - began
        geometry = self.source.geometry()
        summary = summarize(
            self.source,
            defects,
            stretches,
            first_row=first_row or 0,
            last_row=last_row,
            frames=self.frames_inspected,
            seconds=seconds,
            segment_m=self.segment_m,
            inspected_width_mm=(
                float(np.mean(self._band_px)) * geometry.mm_per_px if self._band_px else None
            ),
        )
        return ScanResult(
            summary, tuple(defects), tuple(stretches), geometry, tuple(self._band_log), self.registration
        )

    def _measure_registration(self, frame: WebFrame) -> None:
        """Measure the model's map offset on one real frame, once (a failure leaves positions as they are)."""
        self.register = False
        inspector: Any = self.inspector
        try:
            self.registration = measure_offset(
                frame.image,  # type: ignore[arg-type]
                lambda images: tuple(inspector.score_many(images).maps),
            )
        except Exception:  # positions then stay uncorrected; the scan itself must go on
            logger.exception("the map offset could not be measured; positions are not corrected")
        if self.registration is not None:
            r = self.registration
            logger.info("map offset %.2f, %.2f px (spread %.2f, %d dots)", r.dx, r.dy, r.spread, r.dots)

    def _offset(self) -> tuple[float, float]:
        r = self.registration
        return (r.dx, r.dy) if r is not None else (0.0, 0.0)

    def _close(self, closed: list[WebDefect], defects: list[WebDefect]) -> None:
        if not closed:
            return
        self._store([self._defect_record(d) for d in closed])
        for defect in closed:
            defects.append(defect)
            if self.on_defect is not None:
                self.on_defect(defect)

    def _forget(self, merger: DefectMerger, newest_row: int) -> None:
        """Drop the seqs of frames no open defect can point at any more (memory stays bounded)."""
        keep_from = min(newest_row - 2 * self.source.frame_rows, merger.oldest_frame or newest_row)
        for row in [r for r in self._seq_of if r < keep_from]:
            del self._seq_of[row]
