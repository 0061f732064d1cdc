"""Drift events into the audit trail and out through the station's sinks.

Each :class:`~flawscope.monitor.records.DriftEvent` becomes an audit record of kind ``drift``
(:mod:`flawscope.audit.kinds`), committed to the hash chain like every result; the station then
hands the committed record to its forwarders, so the MQTT, webhook and OPC UA sinks deliver it
from the log, with the same at-least-once guarantee as results. A record that cannot be written
is logged; it never stops the line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flawscope.monitor.records import DriftEvent
from flawscope.types import InspectionRecord, Outcome

logger = logging.getLogger(__name__)

#: The outcome a drift record carries for each level.
LEVEL_OUTCOMES = {"alarm": Outcome.FAIL, "warning": Outcome.REVIEW, "ok": Outcome.PASS}


def drift_record(event: DriftEvent, *, station: str, inspector: Any) -> InspectionRecord:
    """The audit record of a drift event on ``station``, naming the inspector's model and thresholds.

    Args:
        event: the event.
        station: the record's station (``station/camera`` in a multi-camera station).
        inspector: the runtime inspector whose parts are monitored (for the model and thresholds).
    """
    provenance = getattr(inspector, "provenance", None)
    return InspectionRecord(
        part_id=event.part_id or f"drift-{event.statistic}",
        station=station,
        acquired_at=event.at,
        outcome=LEVEL_OUTCOMES[event.level],
        score=event.shift_sd,
        normalized_score=event.value,
        category=event.statistic,
        model_hash=str(getattr(inspector, "model_hash", "")),
        model_version=str(getattr(inspector, "version", "")),
        threshold_version=getattr(provenance, "threshold_version", None),
        source=f"monitor:{event.detector}",
        reason=f"{event.level}: {event.message}",
        kind="drift",
    )


class AuditAlerts:
    """A drift-monitor listener that records each event in the audit log and publishes it.

    Args:
        audit: the station's audit log.
        station: the record's station name.
        inspector: the monitored camera's inspector.
        publish: called with the committed record (the station's forwarders); optional.
    """

    def __init__(
        self,
        audit: Any,
        station: str,
        inspector: Any,
        publish: Callable[[InspectionRecord], object] | None = None,
    ) -> None:
        self.audit = audit
        self.station = station
        self.inspector = inspector
        self.publish = publish
        self.written = 0

    def __call__(self, event: DriftEvent) -> None:
        """Record and publish one event (errors are logged: the line goes on)."""
        try:
            committed = self.audit.append_many(
                [drift_record(event, station=self.station, inspector=self.inspector)]
            )
        except Exception:
            logger.exception("drift event %s/%s could not be recorded", event.statistic, event.level)
            return
        self.written += len(committed)
        if self.publish is not None:
            for record in committed:
                self.publish(record)


def station_monitor(
    inspector: Any,
    audit: Any,
    station: str,
    publish: Callable[[InspectionRecord], object] | None = None,
) -> Any:
    """The drift monitor of a camera, wired to the audit log and sinks; None when the bundle has no reference.

    Args:
        inspector: the camera's runtime inspector (its bundle carries the reference).
        audit: the station's audit log.
        station: the camera's record station name.
        publish: hands committed records to the sinks.
    """
    from flawscope.monitor.drift import DriftMonitor
    from flawscope.monitor.reference import reference_of

    bundle = getattr(inspector, "bundle", None)
    thresholds = getattr(inspector, "thresholds", None)
    reference = reference_of(bundle.manifest) if bundle is not None else None
    if reference is None or thresholds is None:
        return None
    return DriftMonitor(
        reference, thresholds.review, listeners=[AuditAlerts(audit, station, inspector, publish)]
    )
