"""The drift monitor's settings and what it reports: events and summaries (plain frozen records)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from flawscope.errors import InputError

SCORE_STAT = "score"
#: What to check first when a statistic moves, by statistic and direction.
HINTS: dict[str, tuple[str, str]] = {
    "brightness": ("lighting or exposure brighter", "lighting dimmer or exposure shorter"),
    "contrast": ("lighting, exposure or material", "lighting, exposure or material"),
    "sharpness": ("rougher texture or a new material", "focus lost, vibration or a dirty lens"),
    "colour_rg": ("white balance or lighting colour", "white balance or lighting colour"),
    "colour_bg": ("white balance or lighting colour", "white balance or lighting colour"),
    "position_x": ("part placement or fixture", "part placement or fixture"),
    "position_y": ("part placement or fixture", "part placement or fixture"),
    SCORE_STAT: (
        "the model finds passed parts more anomalous than at calibration",
        "the model finds passed parts less anomalous than at calibration",
    ),
}


@dataclass(frozen=True)
class MonitorConfig:
    """Settings of the drift monitor.

    Attributes:
        lam: EWMA weight (0.05: the chart averages about the last 40 parts).
        warning_arl0: in-control ARL of each chart's warning limit, in parts.
        alarm_arl0: in-control ARL of each chart's alarm limit, in parts.
        tolerance_se: the chart limits keep their ARL0 when the calibration mean is off by this
            many of its standard errors (``1/sqrt(n)`` for ``n`` calibration parts).
        window: parts per window test (tumbling windows).
        psi_warning: PSI at or above which a window warns.
        psi_alarm: PSI at or above which a window alarms.
        ks_warning_p: Kolmogorov-Smirnov p-value below which a window warns.
        ks_alarm_p: p-value below which a window alarms.
        clear_after: parts a statistic must stay ``ok`` before its alarm is reported cleared.
    """

    lam: float = 0.05
    warning_arl0: float = 1e5
    alarm_arl0: float = 1e6
    tolerance_se: float = 2.0
    window: int = 500
    psi_warning: float = 0.15
    psi_alarm: float = 0.25
    ks_warning_p: float = 1e-4
    ks_alarm_p: float = 1e-7
    clear_after: int = 500

    def __post_init__(self) -> None:
        if not 0 < self.lam <= 1:
            raise InputError("monitor.lam", f"must be in (0, 1], got {self.lam}")
        if not 2 <= self.warning_arl0 <= self.alarm_arl0:
            raise InputError(
                "monitor.warning_arl0", "need 2 <= warning_arl0 <= alarm_arl0 (parts between false signals)"
            )
        if self.window < 50:
            raise InputError("monitor.window", f"must be at least 50 parts, got {self.window}")
        if not 0 < self.psi_warning <= self.psi_alarm:
            raise InputError("monitor.psi_warning", "need 0 < psi_warning <= psi_alarm")
        if not 0 < self.ks_alarm_p <= self.ks_warning_p < 1:
            raise InputError("monitor.ks_alarm_p", "need 0 < ks_alarm_p <= ks_warning_p < 1")
        if self.tolerance_se < 0 or self.clear_after < 1:
            raise InputError("monitor.tolerance_se", "tolerance_se must be >= 0 and clear_after >= 1")


@dataclass(frozen=True)
class DriftEvent:
    """A statistic's level changed.

    Attributes:
        level: ``"warning"``, ``"alarm"``, or ``"ok"`` when an earlier warning or alarm cleared.
        statistic: the statistic that moved (``brightness``, ``sharpness``, ``score``...).
        detector: ``"ewma"``, ``"ks"`` or ``"psi"``.
        direction: ``"up"`` or ``"down"`` (from the chart's smoothed shift).
        shift_sd: the smoothed shift in calibration standard deviations.
        value: the detector's value (chart position in ``sigma_z``, KS p-value or PSI).
        limit: the limit it crossed.
        parts: parts observed when it happened.
        part_id: the part that triggered it.
        at: time, seconds since the epoch.
        message: a sentence for the operator.
    """

    level: str
    statistic: str
    detector: str
    direction: str
    shift_sd: float
    value: float
    limit: float
    parts: int
    part_id: str
    at: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class StatSummary:
    """Where one statistic stands, for the dashboard.

    Attributes:
        name: the statistic.
        level: ``ok`` / ``warning`` / ``alarm`` (as reported; an alarm stays until cleared).
        shift_sd: smoothed shift from calibration, in calibration standard deviations.
        chart: chart position in ``sigma_z``; the limits are ``±warning_limit`` and ``±alarm_limit``.
        warning_limit: chart warning limit.
        alarm_limit: chart alarm limit.
        n: observations.
        psi: PSI of the last complete window (None before the first).
        ks_p: KS p-value of the last complete window.
        reference_mean: calibration mean.
        reference_sd: calibration standard deviation.
    """

    name: str
    level: str
    shift_sd: float
    chart: float
    warning_limit: float
    alarm_limit: float
    n: int
    psi: float | None
    ks_p: float | None
    reference_mean: float
    reference_sd: float


@dataclass(frozen=True)
class MonitorSummary:
    """The monitor's state: the overall level, each statistic, and the recent events.

    Attributes:
        level: the worst reported level.
        parts: parts observed.
        stats: one summary per monitored statistic.
        skipped: statistics not charted, with why.
        events: the most recent events, oldest first.
        config: the settings in force.
    """

    level: str
    parts: int
    stats: tuple[StatSummary, ...]
    skipped: dict[str, str]
    events: tuple[DriftEvent, ...]
    config: MonitorConfig = field(default_factory=MonitorConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for a dashboard endpoint)."""
        return {
            "level": self.level,
            "parts": self.parts,
            "stats": [asdict(s) for s in self.stats],
            "skipped": dict(self.skipped),
            "events": [e.to_dict() for e in self.events],
            "config": asdict(self.config),
        }
