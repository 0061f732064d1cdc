"""The drift monitor of a station: per-part statistics against the calibration reference.

Every inspected part updates an EWMA chart per statistic (:mod:`flawscope.monitor.imagestats`,
and the log anomaly score of passed parts); every ``window`` parts the window tests (PSI and
Kolmogorov-Smirnov) compare the recent values with the calibration sample. A statistic's level
is the worst of its chart and its last window test. When a level rises the monitor emits a
:class:`DriftEvent` naming the statistic, the detector, the direction and the size of the shift;
when it has been back to ``ok`` for ``clear_after`` parts it emits an ``ok`` event (cleared).

False alarms are set by the ARL0 of each chart (:class:`MonitorConfig`): with ``k`` charts the
station sees a false chart alarm about every ``alarm_arl0 / k`` parts while nothing changed.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from flawscope.monitor.charts import (
    LEVELS,
    EwmaChart,
    WindowTest,
    ewma_limit,
    ks_pvalue,
    normal_clip,
    psi,
)
from flawscope.monitor.imagestats import COLOUR_STATS, POSITION_STATS, STAT_NAMES, ImageStatistics
from flawscope.monitor.records import (
    HINTS,
    SCORE_STAT,
    DriftEvent,
    MonitorConfig,
    MonitorSummary,
    StatSummary,
)
from flawscope.monitor.reference import MonitorReference, reference_values
from flawscope.types import Outcome, Verdict

logger = logging.getLogger(__name__)

PSI_BINS = 10
_TINY = 1e-12


@dataclass
class _Stat:
    """One monitored statistic (private, mutable)."""

    name: str
    reference: np.ndarray
    chart: EwmaChart
    window: np.ndarray
    filled: int = 0
    test: WindowTest | None = None
    reported: str = "ok"
    calm: int = 0
    detector: str = ""

    def level(self) -> tuple[str, str]:
        chart = self.chart.level
        tested = self.test.level if self.test is not None else "ok"
        if LEVELS.index(tested) > LEVELS.index(chart):
            assert self.test is not None
            return tested, self.test.detector
        return chart, "ewma"


Listener = Callable[[DriftEvent], object]


class DriftMonitor:
    """Compares every inspected part with the calibration reference; see the module docstring.

    Thread-safe: parts are observed from the inspection thread, summaries read from any other.

    Args:
        reference: the bundle's monitoring reference.
        review_threshold: the active review threshold; the score reference keeps the calibration
            scores below it (the parts that would have passed).
        config: settings.
        listeners: called with every event (alarm sinks, the audit trail); their errors are logged.
    """

    def __init__(
        self,
        reference: MonitorReference,
        review_threshold: float,
        config: MonitorConfig | None = None,
        listeners: Iterable[Listener] = (),
    ) -> None:
        self.config = config or MonitorConfig()
        self.reference = reference
        self.listeners: list[Listener] = list(listeners)
        self.skipped: dict[str, str] = {}
        self._stats: dict[str, _Stat] = {}
        self._image_index: list[tuple[int, _Stat]] = []
        for index, name in enumerate(STAT_NAMES):
            if name in POSITION_STATS and not reference.position_sensitive:
                self.skipped[name] = "the model does not compare positions"
                continue
            values = reference_values(reference, name)
            stat = self._make(name, values)
            if stat is not None:
                self._image_index.append((index, stat))
        scores = np.asarray(reference.scores, dtype=np.float64)
        passed = np.log(np.maximum(scores[np.isfinite(scores) & (scores < review_threshold)], _TINY))
        self._score = self._make(SCORE_STAT, passed)
        self._compute = ImageStatistics()
        self._lock = threading.Lock()
        self._parts = 0
        self._events: deque[DriftEvent] = deque(maxlen=50)

    def _make(self, name: str, values: np.ndarray) -> _Stat | None:
        values = values[np.isfinite(values)]
        if values.size < 10:
            self.skipped[name] = f"only {values.size} calibration values"
            return None
        spread = float(values.std(ddof=1))
        if not spread > 1e-9 * max(1.0, abs(float(values.mean()))):
            reason = "grey images" if name in COLOUR_STATS else "constant on the calibration parts"
            self.skipped[name] = reason
            return None
        warning, alarm = self.limits(values.size)
        chart = EwmaChart(values, self.config.lam, warning, alarm)
        stat = _Stat(name, np.sort(values), chart, np.empty(self.config.window))
        self._stats[name] = stat
        return stat

    def limits(self, n: int) -> tuple[float, float]:
        """Warning and alarm ``L`` of a chart whose calibration sample has ``n`` values."""
        cfg = self.config
        clip = round(normal_clip(n), 3)
        tolerance = round(cfg.tolerance_se / math.sqrt(n), 4)
        return (
            ewma_limit(cfg.lam, cfg.warning_arl0, clip, tolerance),
            ewma_limit(cfg.lam, cfg.alarm_arl0, clip, tolerance),
        )

    @property
    def statistics(self) -> tuple[str, ...]:
        """The statistics charted."""
        return tuple(self._stats)

    # ------------------------------------------------------------------------------ observing

    def observe(self, image: np.ndarray | None, verdict: Verdict, part_id: str = "") -> list[DriftEvent]:
        """Add one inspected part; returns the events it raised (also sent to the listeners).

        Parts not judged (``error``, ``not_inspected``) are skipped: they say nothing about drift.
        """
        if verdict.outcome in (Outcome.ERROR, Outcome.NOT_INSPECTED) or image is None:
            return []
        stats = self._compute(image)
        return self.observe_stats(stats, verdict, part_id)

    def observe_many(
        self, images: Sequence[np.ndarray | None], verdicts: Sequence[Verdict], part_ids: Sequence[str] = ()
    ) -> list[DriftEvent]:
        """:meth:`observe` for a batch."""
        events: list[DriftEvent] = []
        ids = list(part_ids) or [""] * len(images)
        for image, verdict, part_id in zip(images, verdicts, ids, strict=True):
            events += self.observe(image, verdict, part_id)
        return events

    def observe_stats(self, stats: np.ndarray, verdict: Verdict, part_id: str = "") -> list[DriftEvent]:
        """Add one part's precomputed statistics (``image_stats`` order) and its verdict."""
        events: list[DriftEvent] = []
        with self._lock:
            self._parts += 1
            for index, stat in self._image_index:
                events += self._update(stat, float(stats[index]), part_id)
            if self._score is not None and verdict.outcome is Outcome.PASS and math.isfinite(verdict.score):
                events += self._update(self._score, math.log(max(verdict.score, _TINY)), part_id)
            self._events.extend(events)
        for event in events:
            self._emit(event)
        return events

    def _update(self, stat: _Stat, value: float, part_id: str) -> list[DriftEvent]:
        if not math.isfinite(value):
            return []
        stat.chart.update(value)
        stat.window[stat.filled] = value
        stat.filled += 1
        if stat.filled == stat.window.size:
            stat.test = self._window_test(stat)
            stat.filled = 0
        level, detector = stat.level()
        rank, reported = LEVELS.index(level), LEVELS.index(stat.reported)
        if rank > reported:
            stat.reported, stat.calm, stat.detector = level, 0, detector
            return [self._event(stat, level, detector, part_id)]
        if rank == 0 and reported > 0:
            stat.calm += 1
            if stat.calm >= self.config.clear_after:
                stat.reported, stat.calm = "ok", 0
                return [self._event(stat, "ok", stat.detector, part_id)]
        elif rank > 0:
            stat.calm = 0
        return []

    def _window_test(self, stat: _Stat) -> WindowTest:
        values = stat.window
        stability = psi(stat.reference, values, PSI_BINS)
        ks, p_value = ks_pvalue(stat.reference, values)
        cfg = self.config
        # PSI of two samples of one distribution is about chi2(bins - 1) * (1/n + 1/m): with small
        # windows that alone can pass the conventional limits, so they never sit below the null
        # mean plus 4 (warning) or 6 (alarm) of its standard deviations.
        scale = 1.0 / values.size + 1.0 / stat.reference.size
        null_mean, null_sd = (PSI_BINS - 1) * scale, math.sqrt(2 * (PSI_BINS - 1)) * scale
        psi_warning = max(cfg.psi_warning, null_mean + 4 * null_sd)
        psi_alarm = max(cfg.psi_alarm, null_mean + 6 * null_sd)
        by_psi = 2 if stability >= psi_alarm else 1 if stability >= psi_warning else 0
        by_ks = 2 if p_value < cfg.ks_alarm_p else 1 if p_value < cfg.ks_warning_p else 0
        return WindowTest(
            psi=stability,
            ks=ks,
            p_value=p_value,
            level=LEVELS[max(by_psi, by_ks)],
            detector="psi" if by_psi >= by_ks else "ks",
        )

    def _event(self, stat: _Stat, level: str, detector: str, part_id: str) -> DriftEvent:
        shift = stat.chart.shift
        direction = "up" if shift >= 0 else "down"
        hint = HINTS.get(stat.name, ("", ""))[0 if shift >= 0 else 1]
        if detector == "ewma":
            chart = stat.chart
            value, limit = chart.position, chart.alarm_limit if level == "alarm" else chart.warning_limit
            how = f"EWMA chart at {value:+.2f} sigma_z (limit {limit:.2f})"
        elif detector == "ks" and stat.test is not None:
            value = stat.test.p_value
            limit = self.config.ks_alarm_p if level == "alarm" else self.config.ks_warning_p
            how = f"last {self.config.window} parts differ from calibration (KS p = {value:.2g})"
        else:
            value = stat.test.psi if stat.test is not None else math.nan
            limit = self.config.psi_alarm if level == "alarm" else self.config.psi_warning
            how = f"last {self.config.window} parts differ from calibration (PSI {value:.3f})"
        if level == "ok":
            message = f"{stat.name}: back within calibration limits"
        else:
            message = (
                f"{stat.name} {'rose' if shift >= 0 else 'fell'} by {abs(shift):.2f} calibration SD; "
                f"{how}; check: {hint}"
            )
        return DriftEvent(
            level=level,
            statistic=stat.name,
            detector=detector,
            direction=direction,
            shift_sd=float(shift),
            value=float(value),
            limit=float(limit),
            parts=self._parts,
            part_id=part_id,
            at=time.time(),
            message=message,
        )

    def _emit(self, event: DriftEvent) -> None:
        log = logger.warning if event.level != "ok" else logger.info
        log("drift %s: %s", event.level, event.message)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("drift listener %r failed (the line goes on)", listener)

    # ------------------------------------------------------------------------------- reading

    def summary(self) -> MonitorSummary:
        """The state of every statistic and the recent events (safe from any thread)."""
        with self._lock:
            stats = tuple(
                StatSummary(
                    name=s.name,
                    level=s.reported,
                    shift_sd=float(s.chart.shift),
                    chart=float(s.chart.position),
                    warning_limit=s.chart.warning_limit,
                    alarm_limit=s.chart.alarm_limit,
                    n=s.chart.n,
                    psi=None if s.test is None else s.test.psi,
                    ks_p=None if s.test is None else s.test.p_value,
                    reference_mean=s.chart.mean,
                    reference_sd=s.chart.std,
                )
                for s in self._stats.values()
            )
            worst = max((LEVELS.index(s.level) for s in stats), default=0)
            return MonitorSummary(
                level=LEVELS[worst],
                parts=self._parts,
                stats=stats,
                skipped=dict(self.skipped),
                events=tuple(self._events),
                config=self.config,
            )

    def acknowledge(self) -> None:
        """The cause was fixed: charts and windows restart from the calibration state, levels to ok."""
        with self._lock:
            for stat in self._stats.values():
                stat.chart.reset()
                stat.filled, stat.test, stat.reported, stat.calm = 0, None, "ok", 0
