"""OPC 40100-1 job control on the server: StartSingleJob, StartContinuous, Stop, Abort, Halt, Reset.

A mixin of :class:`~flawscope.integrate.opcua.server.OpcuaServerSink` (the lifecycle and the
triggers stay there; result management is in :mod:`~flawscope.integrate.opcua.result_methods`,
result delivery in :mod:`~flawscope.integrate.opcua.delivery`). Each method moves the camera's
``VisionSystemType`` state machine as the module docstring of the server describes, and a refused
call answers with its OPC UA status instead of raising.
"""

from __future__ import annotations

import logging
from typing import Any

from flawscope.integrate.opcua.result_methods import Answers, Refused, id_of, ua_module, value_of

logger = logging.getLogger(__name__)


class JobMethods(Answers):
    """The job-control methods of a camera's ``VisionSystemType`` object.

    Expects of the class it is mixed into: ``cameras`` (name -> camera config), ``vision`` (name ->
    :class:`~flawscope.integrate.opcua.vision.VisionSystem`), ``handshakes``, the job ids in
    ``_single_job`` / ``_continuous_job``, and ``_hub``, ``_trigger`` and ``_operational``.
    """

    cameras: dict[str, Any]
    vision: dict[str, Any]
    handshakes: dict[str, Any]
    _single_job: dict[str, str]
    _continuous_job: dict[str, str]

    # Provided by the server (declared here for the type checker; the server's own win in the MRO).
    def _hub(self) -> Any:
        raise NotImplementedError

    def _trigger(self, camera: str, part_id: str, job: str, **ids: str) -> None:
        raise NotImplementedError

    async def _operational(self, camera: str) -> None:
        raise NotImplementedError

    def _method(self, camera: str, handler: str) -> Any:
        method = getattr(self, f"_m_{handler}")

        async def call(_parent: Any, *args: Any) -> Any:
            try:
                return await method(camera, *[value_of(a) for a in args])
            except Refused as refused:
                # asyncua turns a raised exception into BadUnexpectedError: return the status instead.
                logger.info("OPC UA %s on camera %s refused: %s", handler, camera, refused.text)
                return ua_module().StatusCode(getattr(ua_module().StatusCodes, refused.code))

        return call

    async def _m_start_single_job(
        self, camera: str, meas: Any, part: Any, recipe: Any, product: Any, *_: Any
    ) -> Any:
        ua = ua_module()

        vision = self.vision[camera]
        if self.cameras[camera].trigger != "plc":
            raise self._bad("BadInvalidState", f"camera {camera} is free-running")
        if vision.auto_state != "Ready":
            raise self._bad("BadInvalidState", f"camera {camera} is {vision.state}, not Ready")
        job = self._hub().new_job_id(camera)
        self._single_job[camera] = job
        await vision.set_state("Operational", "SingleExecution")
        self._trigger(
            camera, id_of(part), job, meas_id=id_of(meas), recipe_id=id_of(recipe), product_id=id_of(product)
        )
        return self._ok(ua.Variant(ua.JobIdDataType(Id=job)))

    async def _m_start_continuous(self, camera: str, *_: Any) -> Any:
        ua = ua_module()

        vision = self.vision[camera]
        if vision.auto_state != "Ready":
            raise self._bad("BadInvalidState", f"camera {camera} is {vision.state}, not Ready")
        if camera not in self.handshakes:
            raise self._bad(
                "BadNotSupported", f"camera {camera} takes continuous triggers through the tag handshake"
            )
        job = self._hub().new_job_id(camera)
        self._continuous_job[camera] = job
        await vision.set_state("Operational", "ContinuousExecution")
        return self._ok(ua.Variant(ua.JobIdDataType(Id=job)))

    async def _m_stop(self, camera: str, *_: Any) -> Any:
        vision = self.vision[camera]
        if self.cameras[camera].trigger == "free":
            raise self._bad("BadInvalidState", f"camera {camera} is free-running")
        if vision.auto_state not in ("SingleExecution", "ContinuousExecution"):
            raise self._bad("BadInvalidState", f"camera {camera} is {vision.state}: nothing to stop")
        self._single_job.pop(camera, None)
        await vision.set_state("Operational", "Ready")
        return self._ok()

    async def _m_abort(self, camera: str, *args: Any) -> Any:
        return await self._m_stop(camera, *args)

    async def _m_halt(self, camera: str, *_: Any) -> Any:
        self._single_job.pop(camera, None)
        await self.vision[camera].set_state("Halted", None)
        return self._ok()

    async def _m_reset(self, camera: str, *_: Any) -> Any:
        await self.vision[camera].set_state("Preoperational", None)
        await self._operational(camera)
        return self._ok()

    async def _m_select_mode_automatic(self, camera: str, *_: Any) -> Any:
        vision = self.vision[camera]
        if vision.main_state == "Halted":
            raise self._bad("BadInvalidState", f"camera {camera} is Halted: call Reset first")
        if vision.main_state != "Operational":
            await self._operational(camera)
        return self._ok()
