"""Result delivery of the OPC UA server: each committed record as the PLC and method clients see it.

A mixin of :class:`~flawscope.integrate.opcua.server.OpcuaServerSink` (the lifecycle and the
triggers stay there; the methods are in :mod:`~flawscope.integrate.opcua.job_methods` and
:mod:`~flawscope.integrate.opcua.result_methods`). For each inspection record of its cameras, in
order: the handshake's result tags (when the PLC uses them), the LatestResult variables and a
ResultReady event, then the PLC's acknowledgement; a drift record becomes a
VisionDiagnosticInfoEvent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flawscope.integrate.opcua.handshake import result_tags
from flawscope.integrate.opcua.loop import LoopThread
from flawscope.integrate.opcua.result_methods import ua_module
from flawscope.integrate.opcua.results import fields
from flawscope.integrate.payload import camera_of
from flawscope.integrate.registry import DeliveryError, SinkContext
from flawscope.types import InspectionRecord


class ResultDelivery:
    """``deliver`` of the server sink, and the events and variables it writes.

    Expects of the class it is mixed into: ``name``, ``context`` and ``backlog`` (a
    :class:`~flawscope.integrate.registry.Sink`), ``cameras``, ``vision``, ``handshakes``, the
    event generators ``_events`` / ``_diagnostics``, ``_single_job``, and the running ``_loop`` and
    ``_server``.
    """

    name: str
    context: SinkContext
    backlog: int
    cameras: dict[str, Any]
    vision: dict[str, Any]
    handshakes: dict[str, Any]
    _events: dict[str, Any]
    _diagnostics: dict[str, Any]
    _single_job: dict[str, str]
    _loop: LoopThread | None
    _server: Any

    def deliver(self, records: Sequence[InspectionRecord]) -> int:
        """ResultReady event and LatestResult for each record of its cameras; with tags, wait for the ack."""
        if self._loop is None or self._server is None:
            raise DeliveryError(f"sink {self.name}: OPC UA server not running")
        done, problem = self._loop.run(self._deliver(list(records), self.backlog))
        if problem:
            raise DeliveryError(f"sink {self.name}: {problem}", delivered=done)
        return done

    async def _deliver(self, records: list[InspectionRecord], backlog: int) -> tuple[int, str]:
        for done, record in enumerate(records):
            camera = camera_of(record)
            if camera not in self.vision or record.station != self.context.station.record_station(camera):
                continue  # another camera's or station's record
            if record.kind == "inspection":
                handshake = self.handshakes.get(camera)
                # The PLC's tags first: the ResultReady event and LatestResult (about 0.5 ms of
                # asyncua work) are for method clients and must not delay the PLC's toggle.
                if handshake is not None and not await handshake.show(record, backlog - done):
                    return done, f"camera {camera}: {handshake.error}"
                await self._publish(camera, record)
                if handshake is not None and not await handshake.wait_ack():
                    return done, f"camera {camera}: {handshake.error}"
            elif record.kind == "drift":
                await self._diagnostic(camera, record)
        return len(records), ""

    async def _publish(self, camera: str, record: InspectionRecord) -> None:
        vision = self.vision[camera]
        simulated = self.cameras[camera].source.startswith("sim:")
        values = fields(record, simulated)
        tags = result_tags(record)
        latest = {k: tags[v] for k, v in _LATEST_FROM_TAGS.items()}
        latest["CreationTime"] = values["CreationTime"]
        await vision.write_values(vision.latest, latest)
        event = self._events[camera]
        types = _event_types()
        for key, value in values.items():
            # asyncua takes each field's type from its declaration's default value, which the
            # NodeSet leaves empty for the optional fields: say it explicitly.
            event.event.add_property(key, value, types.get(key, ua_module().VariantType.ExtensionObject))
        await event.trigger(
            message=f"result {tags['ResultId']} of part {record.part_id}: {record.outcome.value}"
        )
        single = self._single_job.get(camera)
        if single is not None and values["JobId"].Id == single:
            del self._single_job[camera]
            await vision.set_state("Operational", "Ready")

    async def _diagnostic(self, camera: str, record: InspectionRecord) -> None:
        """A drift event as a VisionDiagnosticInfoEvent: severity from its level, the monitor's message."""
        event = self._diagnostics[camera]
        event.event.Severity = _DRIFT_SEVERITY.get(record.outcome.value, 100)
        await event.trigger(message=f"drift {record.category}: {record.reason}")


#: OPC UA event severity (1-1000) of a drift record's level: alarm, warning, cleared.
_DRIFT_SEVERITY = {"fail": 700, "review": 400, "pass": 100}


def _event_types() -> dict[str, Any]:
    ua = ua_module()
    return {
        "HasTransferableDataOnFile": ua.VariantType.Boolean,
        "IsPartial": ua.VariantType.Boolean,
        "IsSimulated": ua.VariantType.Boolean,
        "ResultState": ua.VariantType.Int32,
        "CreationTime": ua.VariantType.DateTime,
        "ResultContent": ua.VariantType.Variant,
    }


_LATEST_FROM_TAGS = {
    "ResultId": "ResultId",
    "ResultSeq": "ResultSeq",
    "PartId": "ResultPartId",
    "JobId": "ResultJobId",
    "Outcome": "Outcome",
    "OutcomeCode": "OutcomeCode",
    "Accept": "Accept",
    "Score": "Score",
    "NormalizedScore": "NormalizedScore",
    "Category": "Category",
    "ModelVersion": "ModelVersion",
    "ThresholdVersion": "ThresholdVersion",
}
