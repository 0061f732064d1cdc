"""The live feed: one thread follows the audit log and keeps what the dashboards show.

It reads only the records it has not seen (``seq`` above the last one read, a few columns), so
its cost follows the line's rate, not the log's size. At start it counts the recent past in SQL
(the window of the shift table) and reads the latest parts. Every browser's event stream reads the
same snapshot, made at most once per poll; new review-band parts and sampled passes are put in the
review queue as they are seen.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from flawscope.audit.schema import inspections
from flawscope.web import queue as review_queue
from flawscope.web.database import WebDB
from flawscope.web.errors import DatabaseError
from flawscope.web.priority import BACKGROUND_STEPS, lower_priority
from flawscope.web.stats import BUCKET_S, OUTCOMES, by_shift, control_chart, percentiles, rates

logger = logging.getLogger(__name__)

_I = inspections.c
COLUMNS = (
    _I.seq, _I.kind, _I.part_id, _I.station, _I.source, _I.acquired_at, _I.outcome,
    _I.normalized_score, _I.latency_ms, _I.category, _I.image_uri, _I.image_sha256,
)  # fmt: skip
RECENT = 300
LATENCIES = 2000
SUBGROUP = 50
GROUPS = 40
THROUGHPUT_WINDOW_S = 60.0
#: A source of sink states for the dashboard: ``name``, ``state``, ``backlog``, ``last_error``...
SinkStatus = Callable[[], Sequence[dict[str, Any]]]


@dataclass(frozen=True)
class Part:
    """A part as the dashboard shows it."""

    seq: int
    part_id: str
    camera: str
    at: float
    outcome: str
    score: float | None
    latency_ms: float | None
    category: str | None
    has_image: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "seq": self.seq,
            "part_id": self.part_id,
            "camera": self.camera,
            "at": self.at,
            "outcome": self.outcome,
            "score": self.score,
            "latency_ms": self.latency_ms,
            "category": self.category,
            "has_image": self.has_image,
        }


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


class Feed:
    """What the dashboards show, kept current from the audit log by one thread.

    Args:
        db: the web app's database.
        shifts: shift start times in minutes after local midnight.
        sample_rate: fraction of passed parts queued for review.
        window_s: how far back the shift table counts.
        poll_s: seconds between reads of the log.
        review_threshold: the review threshold divided by the reject threshold, when known (drawn
            on the score trend; the reject threshold is 1.0 there by definition).
        sinks: where the sinks' states come from (None: the dashboard says there are no sinks).
        on_queued: told the record numbers of parts the feed puts in the review queue (their
            pictures are drawn ahead of time).
    """

    def __init__(
        self,
        db: WebDB,
        *,
        shifts: Sequence[int],
        sample_rate: float = 0.0,
        window_s: float = 36 * 3600.0,
        poll_s: float = 1.0,
        review_threshold: float | None = None,
        sinks: SinkStatus | None = None,
        on_queued: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.db = db
        self.shifts = tuple(shifts)
        self.sample_rate = sample_rate
        self.window_s = window_s
        self.poll_s = poll_s
        self.review_threshold = review_threshold
        self.sinks = sinks
        self.on_queued = on_queued
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.head = 0
        self.version = 0
        self.error = ""
        self.buckets: dict[tuple[str, int], dict[str, int]] = {}
        self.recent: deque[Part] = deque(maxlen=RECENT)
        self.latency: dict[str, deque[float]] = {}
        self.groups: deque[tuple[int, int]] = deque(maxlen=GROUPS)
        self._group = [0, 0]
        self.queue_counts: dict[str, int] = dict.fromkeys(review_queue.REASONS, 0)
        self._queue_checked = 0.0
        self.arrivals: deque[float] = deque(maxlen=100_000)
        self.categories: Counter[str] = Counter()
        self.cameras: set[str] = set()
        self._snapshot: tuple[int, float, dict[str, Any]] | None = None
        self._snapshot_json: tuple[int, str] | None = None  # (id of the snapshot, its JSON)

    # ------------------------------------------------------------------------------ reading

    def _load_history(self) -> None:
        since = time.time() - self.window_s
        bucket = sa.cast(sa.func.floor(_I.acquired_at / BUCKET_S), sa.BigInteger) * BUCKET_S
        query = (
            sa.select(_I.source, bucket.label("bucket"), _I.outcome, sa.func.count())
            .where(_I.kind == "inspection", _I.acquired_at >= since)
            .group_by(_I.source, "bucket", _I.outcome)
        )
        with self.db.read() as conn:
            head = conn.execute(sa.select(sa.func.max(_I.seq))).scalar_one()
            head = int(head or 0)
            rows = conn.execute(query.where(_I.seq <= head)).all()
            latest = conn.execute(
                sa.select(*COLUMNS).where(_I.seq <= head).order_by(_I.seq.desc()).limit(LATENCIES)
            ).all()
        for camera, start, outcome, n in rows:
            self.cameras.add(str(camera))
            counts = self.buckets.setdefault((str(camera), int(start)), dict.fromkeys(OUTCOMES, 0))
            counts[str(outcome)] = counts.get(str(outcome), 0) + int(n)
        for row in reversed(latest):
            self._add(row, count=False)
            if row.acquired_at is not None and row.acquired_at >= time.time() - THROUGHPUT_WINDOW_S:
                self.arrivals.append(float(row.acquired_at))
        self.head = head

    def _add(self, row: Any, *, count: bool = True) -> None:
        if row.category:
            self.categories[str(row.category)] += 1
        if row.kind != "inspection":
            return
        camera = str(row.source)
        self.cameras.add(camera)
        at = float(row.acquired_at) if row.acquired_at is not None else time.time()
        if count:
            self.arrivals.append(at)
            key = (camera, int(at // BUCKET_S) * BUCKET_S)
            counts = self.buckets.setdefault(key, dict.fromkeys(OUTCOMES, 0))
            counts[row.outcome] = counts.get(row.outcome, 0) + 1
        latency = _finite(row.latency_ms)
        if latency is not None:
            self.latency.setdefault(camera, deque(maxlen=LATENCIES)).append(latency)
        self.recent.append(
            Part(
                seq=int(row.seq),
                part_id=str(row.part_id),
                camera=camera,
                at=at,
                outcome=str(row.outcome),
                score=_finite(row.normalized_score),
                latency_ms=latency,
                category=row.category,
                has_image=bool(row.image_uri),
            )
        )
        self._group[0] += 1
        self._group[1] += row.outcome not in ("pass", "review")
        if self._group[0] >= SUBGROUP:
            self.groups.append((self._group[0], self._group[1]))
            self._group = [0, 0]

    def poll_once(self, limit: int = 5000) -> int:
        """Read the records the feed has not seen yet (at most ``limit``).

        Returns:
            How many records were read.
        """
        query = sa.select(*COLUMNS).where(_I.seq > self.head).order_by(_I.seq).limit(limit)
        with self.db.read() as conn:
            rows = conn.execute(query).all()
        if rows:
            keys = [(int(r.seq), str(r.kind), str(r.outcome), str(r.image_sha256)) for r in rows]
            review_queue.enqueue(self.db, keys, self.sample_rate)
            if self.on_queued is not None:
                queued = review_queue.queued_automatically(keys, self.sample_rate)
                if queued:
                    self.on_queued([k[0] for k in queued])
        now = time.time()
        refresh_queue = bool(rows) or now - self._queue_checked > 2.0
        counts = review_queue.counts(self.db) if refresh_queue else None
        with self._lock:
            for row in rows:
                self._add(row)
            if rows:
                self.head = int(rows[-1].seq)
            oldest = (now - self.window_s) // BUCKET_S * BUCKET_S
            for key in [k for k in self.buckets if k[1] < oldest]:
                del self.buckets[key]
            if counts is not None:
                self._queue_checked = now
                changed = counts != self.queue_counts
                self.queue_counts = counts
            else:
                changed = False
            if rows or changed:
                self.version += 1
        return len(rows)

    def start(self) -> None:
        """Count the recent past, queue what arrived while the app was down, then follow the log."""
        review_queue.catch_up(self.db, self.sample_rate)
        self._load_history()
        self._thread = threading.Thread(target=self._run, name="web-feed", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Nobody waits on a read of the log: a core goes to the line, then the pages, then this.
        lower_priority(BACKGROUND_STEPS)
        while not self._stop.is_set():
            try:
                n = self.poll_once()
                if self.error:
                    logger.info("live feed reads the audit log again")
                self.error = ""
            except DatabaseError as exc:
                if not self.error:
                    logger.error("live feed: %s", exc)
                self.error = str(exc)
                n = 0
            except Exception as exc:  # the feed must outlive a bad row; the pages say it stalled
                logger.exception("live feed failed")
                self.error = f"live feed failed: {exc}"
                n = 0
            if n < 5000:
                self._stop.wait(self.poll_s)

    def begin_stop(self) -> None:
        """Ask the feed and every event stream to end (returns at once)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop following the log."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (event streams end)."""
        return self._stop.is_set()

    # ------------------------------------------------------------------------------ showing

    def snapshot_json(self) -> tuple[dict[str, Any], str]:
        """The snapshot and its JSON, safe inside a ``<script>`` element.

        Encoded once per snapshot, shared by every page and event stream that shows it.
        """
        snap = self.snapshot()
        with self._lock:
            if self._snapshot_json is None or self._snapshot_json[0] != id(snap):
                text = json.dumps(snap, allow_nan=False, default=str).replace("<", "\\u003c")
                self._snapshot_json = (id(snap), text)
            return snap, self._snapshot_json[1]

    def snapshot(self) -> dict[str, Any]:
        """Everything the dashboard draws, JSON-ready (made once per change, shared by every client)."""
        with self._lock:
            now = time.time()
            # Rebuilt when parts arrived, and at least every second (throughput decays when idle).
            if (
                self._snapshot is not None
                and self._snapshot[0] == self.version
                and now - self._snapshot[1] < 1
            ):
                return self._snapshot[2]
            recent = list(self.recent)
            while self.arrivals and self.arrivals[0] < now - THROUGHPUT_WINDOW_S:
                self.arrivals.popleft()
            totals: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
            current_shift = by_shift(self.buckets, self.shifts, last=1)
            for row in current_shift:
                for outcome in OUTCOMES:
                    totals[outcome] += row["counts"][outcome]
            data = {
                "version": self.version,
                "head": self.head,
                "now": now,
                "error": self.error,
                "throughput_per_min": len(self.arrivals) * 60.0 / THROUGHPUT_WINDOW_S,
                "shift": {
                    "label": current_shift[0]["shift"] if current_shift else "",
                    **rates(totals).to_dict(),
                },
                "by_shift": by_shift(self.buckets, self.shifts, last=3),
                "latency": {
                    camera: {**percentiles(values), "n": len(values)}
                    for camera, values in self.latency.items()
                },
                "trend": {
                    "seq": [p.seq for p in recent],
                    "score": [p.score for p in recent],
                    "outcome": [p.outcome for p in recent],
                    "reject": 1.0,
                    "review": self.review_threshold,
                },
                "control": {**control_chart(list(self.groups)), "subgroup": SUBGROUP},
                "queue": dict(self.queue_counts),
                "sinks": list(self.sinks()) if self.sinks is not None else None,
                "last": [p.to_dict() for p in recent[-8:]],
            }
            self._snapshot = (self.version, now, data)
            return data
