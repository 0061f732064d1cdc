"""OPC 40100-1 result management on the server, served from the audit store.

GetResultById, GetResultComponentsById, GetResultListFiltered and ReleaseResultHandle. A mixin of
:class:`~flawscope.integrate.opcua.server.OpcuaServerSink` (the job-control methods and the
lifecycle stay there), with the small helpers both use to unpack method arguments and to answer
with a status.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from flawscope.integrate.opcua.results import fields, matches, parse_result_id, to_result
from flawscope.types import InspectionRecord


def ua_module() -> Any:
    """Asyncua's ``ua`` module, untyped (its generated structures are made at run time)."""
    from asyncua import ua

    return ua


def value_of(variant: Any) -> Any:
    """The value inside a Variant (the argument itself when it is none)."""
    return getattr(variant, "Value", variant)


def id_of(value: Any) -> str:
    """The ``Id`` of an id structure argument ("" for a null one)."""
    value = value_of(value)
    return str(getattr(value, "Id", "") or "") if value is not None else ""


class Refused(Exception):  # noqa: N818
    """A method call refused with an OPC UA status (``code`` names it, ``text`` says why)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Answers:
    """How a method answers: ``_ok`` (its outputs and a Good status) or ``_bad`` (raise the refusal)."""

    @staticmethod
    def _ok(*values: Any) -> list[Any]:
        ua = ua_module()

        return [*values, ua.Variant(0, ua.VariantType.Int32)]

    @staticmethod
    def _bad(code: str, text: str) -> Exception:
        return Refused(code, text)


class ResultMethods(Answers):
    """The result-management methods of a camera's ``VisionSystemType`` object.

    Expects of the class it is mixed into: ``cameras`` (name -> camera config), ``context`` (the
    sink context: the station), ``options`` (``result_window``) and ``_audit`` (the audit store,
    opened read-only).
    """

    cameras: dict[str, Any]
    context: Any
    options: Any
    _audit: Any

    async def _record(self, camera: str, result: Any, timeout_ms: int) -> InspectionRecord:
        parsed = parse_result_id(id_of(result))
        if parsed is None:
            raise self._bad("BadInvalidArgument", f"{id_of(result)!r} is not a flawscope result id")
        seq, prefix = parsed
        deadline = time.monotonic() + max(0, timeout_ms or 0) / 1000
        loop = asyncio.get_running_loop()
        while True:
            record = await loop.run_in_executor(None, self._audit.get, seq)
            if record is not None or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        if record is None or not record.record_hash.startswith(prefix):
            raise self._bad("BadNotFound", f"no result {id_of(result)}")
        if record.station != self.context.station.record_station(camera):
            raise self._bad("BadNotFound", f"result {id_of(result)} is not camera {camera}'s")
        return record

    async def _m_get_result_by_id(self, camera: str, result: Any, timeout: Any = 0, *_: Any) -> Any:
        ua = ua_module()

        record = await self._record(camera, result, int(timeout or 0))
        simulated = self.cameras[camera].source.startswith("sim:")
        return self._ok(ua.Variant(0, ua.VariantType.UInt32), ua.Variant(to_result(record, simulated)))

    async def _m_get_result_components_by_id(
        self, camera: str, result: Any, timeout: Any = 0, *_: Any
    ) -> Any:
        ua = ua_module()

        record = await self._record(camera, result, int(timeout or 0))
        f = fields(record, self.cameras[camera].source.startswith("sim:"))
        return self._ok(
            ua.Variant(False, ua.VariantType.Boolean),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(False, ua.VariantType.Boolean),
            ua.Variant(f["IsSimulated"], ua.VariantType.Boolean),
            ua.Variant(f["ResultState"], ua.VariantType.Int32),
            ua.Variant(f["MeasId"]),
            ua.Variant(f["PartId"]),
            ua.Variant(f["ExternalRecipeId"]),
            ua.Variant(f["InternalRecipeId"]),
            ua.Variant(f["ProductId"]),
            ua.Variant(f["ExternalConfigurationId"]),
            ua.Variant(f["InternalConfigurationId"]),
            ua.Variant(f["JobId"]),
            ua.Variant(f["CreationTime"], ua.VariantType.DateTime),
            ua.Variant(f["ProcessingTimes"]),
            ua.Variant(f["ResultContent"], ua.VariantType.Variant),
        )

    async def _m_get_result_list_filtered(self, camera: str, *args: Any) -> Any:
        ua = ua_module()

        state, meas, part, ext_recipe, int_recipe, ext_conf, int_conf, product, job, max_results, start = (
            list(args) + [None] * 11
        )[:11]
        wanted = {
            "meas_id": id_of(meas),
            "part_id": id_of(part),
            "recipe_id": id_of(ext_recipe),
            "internal_recipe_id": id_of(int_recipe),
            "internal_configuration_id": id_of(int_conf),
            "product_id": id_of(product),
            "job_id": id_of(job),
        }
        if id_of(ext_conf):
            wanted["external_configuration_id"] = id_of(ext_conf)  # flawscope sets none: matches nothing
        station = self.context.station.record_station(camera)
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(None, self._search, station, wanted, int(state or 0))
        first = int(start or 0)
        limit = int(max_results or 0) or len(found)
        page = found[first : first + limit]
        simulated = self.cameras[camera].source.startswith("sim:")
        return self._ok(
            ua.Variant(first + len(page) >= len(found), ua.VariantType.Boolean),
            ua.Variant(len(page), ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(
                [ua.Variant(to_result(r, simulated)).Value for r in page], ua.VariantType.ExtensionObject
            ),
        )

    def _search(self, station: str, wanted: dict[str, str], state: int) -> list[InspectionRecord]:
        if wanted["part_id"]:
            candidates = self._audit.records(part_id=wanted["part_id"])
        else:
            head = self._audit.head().seq
            candidates = self._audit.records(since_seq=max(0, head - self.options.result_window))
        return [
            r
            for r in candidates
            if r.kind == "inspection" and r.station == station and matches(r, wanted, state)
        ]

    async def _m_release_result_handle(self, camera: str, *_: Any) -> Any:
        return self._ok()  # results are served from the audit store: there is nothing to release
