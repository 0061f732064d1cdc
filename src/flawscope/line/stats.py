"""Counters of a running line: parts per outcome, per-stage latency, throughput.

Everything here is bounded in memory (latency percentiles come from a window of the most recent
samples; means are over the whole run), so a line can run for weeks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from flawscope.types import InspectionRecord, Outcome

#: Stages timed by the line: ``acquire`` (waiting for and reading a frame), ``infer`` (one batch
#: through preprocess + model + decide), ``record`` (image storage + one audit transaction),
#: ``publish`` (the publishers, per record) and ``end_to_end`` (acquired to committed, per part).
STAGES = ("acquire", "infer", "record", "publish", "end_to_end")
WINDOW = 10_000
RATE_WINDOW_S = 5.0


@dataclass(frozen=True)
class StageLatency:
    """Latency of one stage, in milliseconds.

    Attributes:
        n: samples over the whole run.
        mean_ms: mean over the whole run.
        p99_ms: 99th percentile over the most recent samples (up to 10,000).
        max_ms: largest of the most recent samples.
    """

    n: int = 0
    mean_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")


@dataclass(frozen=True)
class LineSummary:
    """A snapshot of the line: given to the status callback while running, and returned at the end.

    Attributes:
        station: station name.
        running: False in the final summary.
        elapsed_s: seconds since the line started.
        acquired: frames taken from the source.
        recorded: records committed to the audit log.
        published: records handed to every publisher.
        counts: committed records per outcome value (``"pass"``, ``"fail"``...), zeros included.
        dropped: parts recorded ``not_inspected`` because the queue was full (``drop`` policy).
        unrecorded: parts whose record could not be committed (only after an audit failure).
        publish_errors: publisher calls that raised.
        missed: frames the source itself reports lost (stream down, camera frame-id gaps).
        throughput: committed records per second over the whole run.
        recent_throughput: committed records per second over the last few seconds.
        stages: latency per stage (see :data:`STAGES`).
        queues: current depth of each queue.
        stop_reason: why the line stopped (``"source exhausted"``, ``"stop requested"``, an error).
    """

    station: str
    running: bool
    elapsed_s: float
    acquired: int
    recorded: int
    published: int
    counts: Mapping[str, int]
    dropped: int = 0
    unrecorded: int = 0
    publish_errors: int = 0
    missed: int = 0
    throughput: float = 0.0
    recent_throughput: float = 0.0
    stages: Mapping[str, StageLatency] = field(default_factory=dict)
    queues: Mapping[str, int] = field(default_factory=dict)
    stop_reason: str = ""

    @property
    def rejected(self) -> int:
        """Committed records whose outcome stops the part (everything but pass)."""
        return sum(n for outcome, n in self.counts.items() if outcome != Outcome.PASS.value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["rejected"] = self.rejected
        return data


class _Latency:
    """Running mean over everything, percentiles over a bounded window."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.window: deque[float] = deque(maxlen=WINDOW)

    def add(self, ms: float) -> None:
        self.n += 1
        self.total += ms
        self.window.append(ms)

    def summary(self) -> StageLatency:
        if not self.n:
            return StageLatency()
        recent = np.fromiter(self.window, dtype=np.float64, count=len(self.window))
        return StageLatency(
            self.n, self.total / self.n, float(np.percentile(recent, 99)), float(recent.max())
        )


class LineStats:
    """Thread-safe counters that the line's stages update and the status callback reads."""

    def __init__(self, station: str) -> None:
        self.station = station
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._latency = {stage: _Latency() for stage in STAGES}
        self._counts = dict.fromkeys((o.value for o in Outcome), 0)
        self._recent: deque[tuple[float, int]] = deque()
        self.acquired = 0
        self.recorded = 0
        self.published = 0
        self.dropped = 0
        self.unrecorded = 0
        self.publish_errors = 0

    def latency(self, stage: str, ms: float, times: int = 1) -> None:
        """Add ``times`` samples of ``ms`` milliseconds to a stage."""
        with self._lock:
            target = self._latency[stage]
            for _ in range(times):
                target.add(ms)

    def count(self, name: str, n: int = 1) -> None:
        """Increase one of the plain counters (``acquired``, ``published``, ``dropped``...)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def committed(self, records: Iterable[InspectionRecord], end_to_end_ms: Iterable[float]) -> None:
        """Count records committed to the audit log, with each part's acquired-to-committed latency."""
        now = time.monotonic()
        with self._lock:
            n = 0
            for record in records:
                self._counts[record.outcome.value] += 1
                n += 1
            for ms in end_to_end_ms:
                self._latency["end_to_end"].add(ms)
            self.recorded += n
            self._recent.append((now, n))
            while self._recent and now - self._recent[0][0] > RATE_WINDOW_S:
                self._recent.popleft()

    def snapshot(
        self,
        *,
        running: bool,
        missed: int = 0,
        queues: Mapping[str, int] | None = None,
        stop_reason: str = "",
    ) -> LineSummary:
        """The current state as a :class:`LineSummary`."""
        now = time.monotonic()
        with self._lock:
            elapsed = now - self.started
            recent = [(t, n) for t, n in self._recent if now - t <= RATE_WINDOW_S]
            span = min(RATE_WINDOW_S, elapsed)
            return LineSummary(
                station=self.station,
                running=running,
                elapsed_s=elapsed,
                acquired=self.acquired,
                recorded=self.recorded,
                published=self.published,
                counts=dict(self._counts),
                dropped=self.dropped,
                unrecorded=self.unrecorded,
                publish_errors=self.publish_errors,
                missed=missed,
                throughput=self.recorded / elapsed if elapsed > 0 else 0.0,
                recent_throughput=sum(n for _, n in recent) / span if span > 0 else 0.0,
                stages={stage: lat.summary() for stage, lat in self._latency.items()},
                queues=dict(queues or {}),
                stop_reason=stop_reason,
            )
