"""The streaming inspection loop: acquire → inspect → record → publish, in threads, without losing a part.

::

    source ──q_infer──▶ inspect (batches) ──q_record──▶ store image + audit ──q_publish──▶ publishers
                                                        (one transaction)

Queues are bounded. With ``backpressure="block"`` a full queue blocks the source; with ``"drop"``
the part is recorded ``not_inspected`` ("dropped: queue full"): a part is never lost silently.
Publishers see a record only after it is committed, so every published result is in the audit log.

Fail safe: a part whose image cannot be read or whose inference fails is recorded as ``error`` (a
reject) and the line goes on. An audit write failure or an image store that cannot be written
stops the line: it stops acquiring, records what it still can, and raises :class:`LineStopped`
naming the parts that could not be recorded. A stop request (``stop_event``, Ctrl-C) stops
acquiring, finishes and records every part already taken, and returns the summary.

This module is the threads and their queues; what becomes of each part (its image, its map, its
record) is :mod:`flawscope.line.parts`.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from flawscope.acquire.base import Source
from flawscope.audit import AuditLog
from flawscope.errors import BundleError
from flawscope.line.errors import LineStopped
from flawscope.line.parts import Part, PartRecorder
from flawscope.line.records import (
    DROPPED_REASON,
    InspectorLike,
    PartObserver,
    Publisher,
    error,
    judge,
)
from flawscope.line.settings import LineSettings, check_line_settings
from flawscope.line.stats import LineStats, LineSummary
from flawscope.line.store import ImageStore
from flawscope.types import InspectionRecord, Outcome

logger = logging.getLogger(__name__)

_STOP = object()  # end of stream, passed down the queues after the last part


class _Line:
    def __init__(
        self,
        source: Source,
        inspector: InspectorLike,
        audit: AuditLog,
        settings: LineSettings,
        *,
        store: ImageStore | None,
        publishers: Sequence[Publisher],
        on_status: Callable[[LineSummary], object] | None,
        stop_event: threading.Event | None,
        monitor: PartObserver | None = None,
        on_commit: Publisher | None = None,
    ) -> None:
        station, batch_size, queue_size = settings.station, settings.batch_size, settings.queue_size
        self.source = source
        self.inspector = inspector
        self.audit = audit
        self.station = station
        self.parts = PartRecorder(inspector, settings, store, self._fail)
        self.batch_size = batch_size
        self.max_transaction = max(batch_size, 64)
        self.drop = settings.drop
        self.publishers = tuple(publishers)
        self.on_commit = on_commit
        self.on_status = on_status
        self.stop_event = stop_event
        self.status_interval_s = settings.status_interval_s
        self.monitor = monitor
        self.stats = LineStats(station)
        self.q_infer: queue.Queue[Any] = queue.Queue(queue_size)
        self.q_record: queue.Queue[Any] = queue.Queue(max(2, queue_size // batch_size))
        self.q_publish: queue.Queue[Any] = queue.Queue(max(256, queue_size))
        self.halt = threading.Event()
        self._lock = threading.Lock()
        self.fatal = ""
        self.stop_reason = ""
        self.audit_failed = False
        self.backlog: list[tuple[Part, InspectionRecord]] = []
        self.unrecorded: list[str] = []

    # ------------------------------------------------------------------------------ control

    def _fail(self, reason: str) -> None:
        logger.error("line %s: %s; stopping", self.station, reason)
        with self._lock:
            if not self.fatal:
                self.fatal = reason
        self._stop(reason)

    def _stop(self, reason: str) -> None:
        with self._lock:
            if self.halt.is_set():
                return
            self.stop_reason = reason
            self.halt.set()
        logger.info("line %s: stopping (%s)", self.station, reason)
        self.source.close()  # wakes a source waiting for its next part

    def _snapshot(self, running: bool) -> LineSummary:
        queues = {
            "infer": self.q_infer.qsize(),
            "record": self.q_record.qsize(),
            "publish": self.q_publish.qsize(),
        }
        reason = self.fatal or self.stop_reason or ("" if running else "source exhausted")
        return self.stats.snapshot(
            running=running, missed=self.source.missed, queues=queues, stop_reason=reason
        )

    def _status(self, summary: LineSummary) -> None:
        if self.on_status is None:
            return
        try:
            self.on_status(summary)
        except Exception:
            logger.exception("status callback failed (the line goes on)")

    # ------------------------------------------------------------------------------- stages

    def acquire(self) -> None:
        frames = iter(self.source)
        try:
            while not self.halt.is_set():
                started = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except Exception as exc:
                    logger.exception("source %s failed", self.source.uri)
                    self._fail(f"the source {self.source.uri} failed: {exc}")
                    break
                now = time.perf_counter()
                self.stats.latency("acquire", (now - started) * 1000)
                self.stats.count("acquired")
                part = Part(frame, now)
                if not self.drop:
                    self.q_infer.put(part)
                    continue
                try:
                    self.q_infer.put_nowait(part)
                except queue.Full:
                    logger.warning("part %s dropped: inspection queue full", frame.part_id)
                    part.verdict = error(DROPPED_REASON, self.inspector, Outcome.NOT_INSPECTED)
                    part.dropped = True
                    self.stats.count("dropped")
                    self.q_record.put([part])
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    logger.exception("closing the source %s failed", self.source.uri)
            self.q_infer.put(_STOP)

    def _judge(self, batch: list[Part]) -> None:
        started = time.perf_counter()
        frames = [p.frame for p in batch]
        try:
            verdicts = judge(frames, self.inspector)
        except Exception as exc:
            if isinstance(exc, BundleError):
                self._fail(f"the inspector cannot judge parts: {exc}")
            else:
                logger.exception("inference failed for a batch of %d parts", len(batch))
            verdicts = [
                error(f.error or "no image", self.inspector)
                if f.image is None
                else error(f"inference failed: {exc}", self.inspector)
                for f in frames
            ]
        if self.monitor is not None:
            try:
                self.monitor.observe_many([f.image for f in frames], verdicts, [f.part_id for f in frames])
            except Exception:
                logger.exception("the drift monitor failed on a batch (the line goes on)")
        now = time.perf_counter()
        self.stats.latency("infer", (now - started) * 1000)
        for part, verdict in zip(batch, verdicts, strict=True):
            part.verdict = self.parts.trim(verdict)
            part.judged = now

    def infer(self) -> None:
        ended = False
        try:
            while not ended:
                first = self.q_infer.get()
                if first is _STOP:
                    break
                batch = [first]
                while len(batch) < self.batch_size:
                    try:
                        item = self.q_infer.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        ended = True
                        break
                    batch.append(item)
                self._judge(batch)
                self.q_record.put(batch)
        finally:
            self.q_record.put(_STOP)

    def _commit(self, pairs: list[tuple[Part, InspectionRecord]]) -> bool:
        started = time.perf_counter()
        try:
            committed = self.audit.append_many([r for _, r in pairs])
        except Exception as exc:
            logger.exception("audit append of %d records failed", len(pairs))
            self._fail(f"the audit log could not be written: {exc}")
            return False
        now = time.perf_counter()
        self.stats.latency("record", (now - started) * 1000)
        self.stats.committed(committed, [(now - p.acquired) * 1000 for p, _ in pairs])
        for record in committed:
            if self.on_commit is not None:
                try:
                    self.on_commit(record)
                except Exception:
                    logger.exception("commit hand-over failed for part %s", record.part_id)
            self.q_publish.put(record)
        return True

    def record(self) -> None:
        ended = False
        try:
            while not ended:
                item = self.q_record.get()
                if item is _STOP:
                    break
                parts = list(item)
                while len(parts) < self.max_transaction:
                    try:
                        more = self.q_record.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        ended = True
                        break
                    parts.extend(more)
                try:
                    pairs = [(p, self.parts.to_record(p)) for p in parts]
                except Exception as exc:  # a bug, not a part's problem: stop rather than guess
                    logger.exception("records of %d parts could not be made", len(parts))
                    self._fail(f"records could not be made: {exc}")
                    self.unrecorded.extend(p.frame.part_id for p in parts)
                    continue
                if self.audit_failed or not self._commit(pairs):
                    self.audit_failed = True
                    self.backlog.extend(pairs)
            # One last attempt for what an audit failure left behind (the database may be back).
            if self.backlog and not self._commit(self.backlog):
                self.unrecorded.extend(p.frame.part_id for p, _ in self.backlog)
            self.stats.count("unrecorded", len(self.unrecorded))
            for part_id in self.unrecorded:
                logger.error("part %s NOT recorded in the audit log: treat it as a reject", part_id)
        finally:
            self.q_publish.put(_STOP)

    def publish(self) -> None:
        while True:
            record = self.q_publish.get()
            if record is _STOP:
                return
            started = time.perf_counter()
            for publisher in self.publishers:
                try:
                    publisher(record)
                except Exception:
                    logger.exception("publisher %r failed for part %s", publisher, record.part_id)
                    self.stats.count("publish_errors")
            self.stats.latency("publish", (time.perf_counter() - started) * 1000)
            self.stats.count("published")

    # --------------------------------------------------------------------------------- main

    def run(self) -> LineSummary:
        stages = [self.acquire, self.infer, self.record, self.publish]
        threads = [threading.Thread(target=s, name=f"line-{s.__name__}", daemon=True) for s in stages]
        for thread in threads:
            thread.start()
        last = threads[-1]
        while last.is_alive():
            try:
                last.join(self.status_interval_s)
                if self.stop_event is not None and self.stop_event.is_set():
                    self._stop("stop requested")
                self._status(self._snapshot(running=True))
            except KeyboardInterrupt:
                # Finish the parts already taken rather than abandon them; a second Ctrl-C still kills.
                self._stop("interrupted")
        for thread in threads:
            thread.join()
        summary = self._snapshot(running=False)
        self._status(summary)
        logger.info(
            "line %s: %d parts recorded in %.1f s (%s)",
            self.station,
            summary.recorded,
            summary.elapsed_s,
            summary.stop_reason,
        )
        if self.fatal:
            raise LineStopped(self.fatal, summary, self.unrecorded)
        return summary


def run_line(
    source: Source,
    inspector: InspectorLike,
    audit: AuditLog,
    *,
    station: str,
    store_images: str | os.PathLike[str] | ImageStore | None = None,
    batch_size: int = 8,
    queue_size: int = 64,
    backpressure: str = "block",
    publishers: Sequence[Publisher] = (),
    on_status: Callable[[LineSummary], object] | None = None,
    stop_event: threading.Event | None = None,
    status_interval_s: float = 0.5,
    keep_maps: Collection[str] = ("review", "fail"),
    review_sample: float = 0.0,
    monitor: PartObserver | None = None,
    on_commit: Publisher | None = None,
) -> LineSummary:
    """Run an inspection line until the source ends, a stop is requested, or recording fails.

    Args:
        source: where parts come from (see :func:`flawscope.acquire.open_source`).
        inspector: :class:`flawscope.runtime.Inspector` or anything with ``inspect_many``,
            ``model_hash`` and ``version``.
        audit: the audit log every result is committed to before it is published.
        station: station name written into every record.
        store_images: folder to keep every part's image in (``<date>/<part id>.png``), or an
            :class:`ImageStore` already opened; None: none kept.
        batch_size: most parts inspected together; a batch never waits to fill up.
        queue_size: parts waiting for inspection before backpressure applies.
        backpressure: ``"block"`` (the source waits) or ``"drop"`` (the part is recorded
            ``not_inspected`` with reason "dropped: queue full").
        publishers: called with each committed record, in commit order (PLC, MQTT, UI...).
        on_status: called about every ``status_interval_s`` with a :class:`LineSummary`, and once
            with the final one.
        stop_event: set it (e.g. from a SIGINT/SIGTERM handler) to stop cleanly.
        status_interval_s: seconds between status callbacks.
        keep_maps: outcomes whose anomaly maps are kept beside their images (with
            ``store_images``), so reviewers see them without running the model again.
        review_sample: fraction of passed parts sampled for review (see
            :func:`~flawscope.line.records.in_review_sample`); their maps are kept too.
        monitor: sees every judged part in the inspection thread (the drift monitor,
            :class:`flawscope.monitor.DriftMonitor`); its failures are logged, never stop the line.
        on_commit: called with each committed record on the committing thread, before the
            publishers; it must never block (the station's hand-over to its outbox forwarders: one
            thread hand-over fewer between a commit and a PLC's result than a publisher).

    Returns:
        The final summary.

    Raises:
        InputError: for an invalid setting or an image store that cannot be written (before any
            part is taken).
        LineStopped: when the audit log or the image store failed, the source failed, or the
            inspector cannot judge parts; it says which parts, if any, are not recorded.
    """
    settings = check_line_settings(
        station=station,
        batch_size=batch_size,
        queue_size=queue_size,
        backpressure=backpressure,
        status_interval_s=status_interval_s,
        review_sample=review_sample,
        keep_maps=keep_maps,
    )
    if store_images is None or isinstance(store_images, ImageStore):
        store = store_images
    else:
        store = ImageStore(store_images)
    line = _Line(
        source,
        inspector,
        audit,
        settings,
        store=store,
        publishers=publishers,
        on_status=on_status,
        stop_event=stop_event,
        monitor=monitor,
        on_commit=on_commit,
    )
    return line.run()
