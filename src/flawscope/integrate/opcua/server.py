"""The station as an OPC UA server modelled on OPC 40100-1 (Machine Vision): sink ``opcua-server``.

Each camera is a ``VisionSystemType`` object (:mod:`flawscope.integrate.opcua.vision`). The PLC
either calls the spec's methods (``StartSingleJob`` -> JobId, then a ``ResultReady`` event and
``GetResultById``/``GetResultListFiltered``, served from the audit store) or uses the tag handshake
(:mod:`flawscope.integrate.opcua.handshake`), or both. As a sink it delivers each committed record of
its cameras in order (:mod:`flawscope.integrate.opcua.delivery`): ResultReady event, LatestResult
variables, and (with tags) the handshake, counting a record delivered only once the PLC
acknowledged it, so a PLC that is away finds its results waiting when it comes back. This module
is the lifecycle (start, state machine, stop) and the triggers.

State machine: Preoperational at start, then Operational/Ready once the server runs. A camera with
``trigger = "plc"`` goes Ready -> SingleExecution on StartSingleJob and back when the job's result
is delivered; with the tag handshake it goes to ContinuousExecution at start (tag triggers are taken
there). A free-running camera is always in ContinuousExecution. Halt -> Halted (no trigger taken);
Reset -> Preoperational -> Operational again; SelectModeAutomatic -> Operational.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from flawscope.acquire.triggered import Trigger
from flawscope.config import Problem
from flawscope.integrate.opcua.delivery import ResultDelivery
from flawscope.integrate.opcua.handshake import Handshake
from flawscope.integrate.opcua.job_methods import JobMethods
from flawscope.integrate.opcua.loop import LoopThread
from flawscope.integrate.opcua.result_methods import ResultMethods, ua_module
from flawscope.integrate.opcua.security import (
    PasswordUsers,
    certificate_problems,
    secure_server,
    validate_security,
)
from flawscope.integrate.opcua.vision import (
    DIAGNOSTIC_INFO_EVENT_TYPE,
    RESULT_READY_EVENT_TYPE,
    VisionSystem,
    load_nodeset,
)
from flawscope.integrate.registry import DeliveryError, Sink, SinkContext, register_sink

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpcuaServerOptions:
    """``[sink.NAME]`` with ``type = "opcua-server"``.

    Attributes:
        endpoint: where the server listens, ``opc.tcp://HOST:PORT/PATH``.
        application_uri: the server's application URI (must be in its certificate's SAN).
        namespace: URI of the station's own namespace (default ``urn:flawscope:<station>``).
        security: policies offered: ``None``, ``Basic256Sha256_Sign``, ``Basic256Sha256_SignAndEncrypt``.
        certificate: the application instance certificate (DER or PEM).
        private_key: its private key (PEM).
        trust_store: folder of the client certificates accepted.
        users: user name -> environment variable holding its password.
        allow_anonymous: accept sessions without a user (test benches only).
        handshake: ``methods`` (StartSingleJob, events), ``tags`` (the tag handshake) or ``both``.
        buffer_depth: results the PLC may be behind before ResultOverrun.
        ack_timeout_s: ResultAck watchdog.
        trigger_timeout_s: watchdog on the PLC dropping Trigger.
        heartbeat_s: VisionHeartbeat period.
        plc_watchdog_s: report PlcHeartbeat silence after this long (0: not watched).
        result_window: most recent records GetResultListFiltered searches (PartId searches all).
    """

    endpoint: str = "opc.tcp://127.0.0.1:4840/flawscope"
    application_uri: str = "urn:flawscope:station"
    namespace: str = ""
    security: tuple[str, ...] = ("Basic256Sha256_SignAndEncrypt",)
    certificate: Path | None = None
    private_key: Path | None = None
    trust_store: Path | None = None
    users: dict[str, str] = field(default_factory=dict)
    allow_anonymous: bool = False
    handshake: Literal["methods", "tags", "both"] = "both"
    buffer_depth: int = field(default=8, metadata={"min": 1})
    ack_timeout_s: float = field(default=5.0, metadata={"min": 0.01})
    trigger_timeout_s: float = field(default=5.0, metadata={"min": 0.01})
    heartbeat_s: float = field(default=1.0, metadata={"min": 0.05})
    plc_watchdog_s: float = field(default=0.0, metadata={"min": 0.0})
    result_window: int = field(default=10000, metadata={"min": 1})

    def validate(self) -> list[Problem]:
        """Cross-field checks."""
        problems = validate_security(self.security, self.certificate, self.private_key, self.trust_store)
        parts = urlsplit(self.endpoint)
        if parts.scheme != "opc.tcp" or not parts.hostname or not parts.port:
            problems.append(Problem("endpoint", f"must be opc.tcp://HOST:PORT/PATH, got {self.endpoint!r}"))
        if not self.users and not self.allow_anonymous:
            problems.append(
                Problem("users", "give users (name = password variable) or allow_anonymous = true")
            )
        return problems


@register_sink(
    "opcua-server", config=OpcuaServerOptions, summary="OPC UA server (OPC 40100-1 Machine Vision)"
)
class OpcuaServerSink(JobMethods, ResultMethods, ResultDelivery, Sink):
    """Serves results and takes triggers as an OPC UA Machine Vision system."""

    takes_triggers = True
    reopen_on_error = False  # a PLC that does not acknowledge is no reason to restart the server
    max_batch = 1  # the handshake acknowledges one result at a time: the cursor follows each

    def __init__(self, name: str, options: OpcuaServerOptions, context: SinkContext) -> None:
        super().__init__(name, options, context)
        station = context.station
        chosen = context.sink.cameras or tuple(c.name for c in station.cameras)
        self.cameras = {c.name: c for c in station.cameras if c.name in chosen}
        self.namespace = options.namespace or f"urn:flawscope:{station.station.name}"
        self.users = PasswordUsers(options.users, options.allow_anonymous, sink=name)
        self._loop: LoopThread | None = None
        self._server: Any = None
        self._audit: Any = None
        self.vision: dict[str, VisionSystem] = {}
        self.handshakes: dict[str, Handshake] = {}
        self._events: dict[str, Any] = {}
        self._diagnostics: dict[str, Any] = {}
        self._single_job: dict[str, str] = {}
        self._continuous_job: dict[str, str] = {}
        self._by_node: dict[Any, tuple[str, str]] = {}
        self.last_error = ""
        self._monitor: Any = None
        self.mv = 0
        self.ns = 0

    # ------------------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Start the server (once; it stays up while the station runs).

        Raises:
            DeliveryError: it cannot start (port taken, certificate unreadable...).
        """
        if self._server is not None:
            return
        from flawscope.audit import AuditLog

        self._loop = LoopThread(f"opcua-{self.name}")
        try:
            self._audit = AuditLog.open(
                self.context.audit_url or self.context.station.station.audit, read_only=True
            )
            self._loop.run(self._start(), timeout_s=60)
        except Exception as exc:
            self.close()
            raise DeliveryError(
                f"sink {self.name}: OPC UA server on {self.options.endpoint} cannot start: {exc}"
            ) from None

    async def _start(self) -> None:
        from asyncua import Server

        ua = ua_module()
        from asyncua.common.callback import CallbackType

        opts = self.options
        server = Server()
        await server.init()
        server.set_endpoint(opts.endpoint)
        server.set_server_name(f"flawscope {self.context.station.station.name}")
        await server.set_application_uri(opts.application_uri)
        await secure_server(
            server,
            security=opts.security,
            certificate=opts.certificate,
            private_key=opts.private_key,
            trust_store=opts.trust_store,
            users=self.users,
        )
        self.mv = await load_nodeset(server)
        self.ns = await server.register_namespace(self.namespace)
        for camera in self.cameras:
            vision = VisionSystem(server, self.ns, self.mv, camera)
            await vision.build()
            self.vision[camera] = vision
            for handler, node in vision.methods.items():
                server.link_method(node, self._method(camera, handler))
            self._events[camera] = await server.get_event_generator(
                ua.NodeId(RESULT_READY_EVENT_TYPE, self.mv), vision.node
            )
            self._diagnostics[camera] = await server.get_event_generator(
                ua.NodeId(DIAGNOSTIC_INFO_EVENT_TYPE, self.mv), vision.node
            )
            if opts.handshake in ("tags", "both"):
                handshake = Handshake(
                    camera,
                    _LocalTags(vision),
                    self._tag_trigger(camera),
                    buffer_depth=opts.buffer_depth,
                    ack_timeout_s=opts.ack_timeout_s,
                    trigger_timeout_s=opts.trigger_timeout_s,
                    heartbeat_s=opts.heartbeat_s,
                    plc_watchdog_s=opts.plc_watchdog_s,
                )
                self.handshakes[camera] = handshake
                for tag, node in vision.tags.items():
                    self._by_node[node.nodeid] = (camera, tag)
        server.subscribe_server_callback(CallbackType.PostWrite, self._post_write)
        await server.start()
        self._server = server
        for camera in self.vision:
            if camera in self.handshakes:
                await self.handshakes[camera].start()
            await self._operational(camera)
        self._monitor = asyncio.ensure_future(self._watch_cameras())
        logger.info("sink %s: OPC UA server on %s (%s)", self.name, opts.endpoint, ", ".join(opts.security))

    async def _watch_cameras(self) -> None:
        """Error while a camera's source is down or its line stopped; Operational again after."""
        check = self.context.camera_problem
        if check is None:
            return
        while True:
            await asyncio.sleep(0.5)
            for camera, vision in self.vision.items():
                problem = check(camera)
                if problem and vision.main_state == "Operational":
                    logger.error(
                        "sink %s: camera %s: %s; VisionStateMachine -> Error", self.name, camera, problem
                    )
                    self._single_job.pop(camera, None)
                    await vision.set_state("Error", None)
                elif not problem and vision.main_state == "Error":
                    await self._operational(camera)  # ErrorToOperationalAuto

    async def _operational(self, camera: str) -> None:
        vision = self.vision[camera]
        await vision.set_state("Operational", "Initialized")
        await vision.set_state("Operational", "Ready")
        if self.cameras[camera].trigger == "free":
            self._continuous_job[camera] = f"free-{camera}"
            await vision.set_state("Operational", "ContinuousExecution")
        elif camera in self.handshakes:
            self._continuous_job[camera] = self._hub().new_job_id(camera)
            await vision.set_state("Operational", "ContinuousExecution")

    def close(self) -> None:
        """Stop the server."""
        loop, self._loop = self._loop, None
        server, self._server = self._server, None
        if loop is not None:
            if server is not None:
                try:
                    loop.run(self._stop(server), timeout_s=10)
                except Exception as exc:
                    logger.warning("sink %s: stopping the OPC UA server: %s", self.name, exc)
            loop.stop()
        if self._audit is not None:
            self._audit.close()
            self._audit = None

    async def _stop(self, server: Any) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        for handshake in self.handshakes.values():
            await handshake.stop()
        await server.stop()

    def health(self) -> dict[str, Any]:
        """Server up, each camera's state and handshake."""
        return {
            "connected": self._server is not None,
            "endpoint": self.options.endpoint,
            "cameras": {
                c: {
                    "state": v.state,
                    **({"handshake": self.handshakes[c].health()} if c in self.handshakes else {}),
                }
                for c, v in self.vision.items()
            },
            "refused_logins": self.users.refused,
            "refused_certificates": self.users.refused_certificates,
        }

    def check(self) -> list[str]:
        """Certificates, trust store, password variables and the endpoint's port."""
        import os

        opts = self.options
        problems = []
        if any(p != "None" for p in opts.security):
            problems += certificate_problems(
                opts.certificate, opts.private_key, opts.trust_store, opts.application_uri
            )
        for user, variable in opts.users.items():
            if not os.environ.get(variable):
                problems.append(f"environment variable {variable} (password of user {user}) is not set")
        parts = urlsplit(opts.endpoint)
        host = parts.hostname or ""
        try:
            with socket.socket() as sock:
                sock.bind((host, parts.port or 4840))
        except OSError as exc:
            problems.append(f"cannot listen on {host}:{parts.port} ({exc.strerror or exc})")
        return problems

    # -------------------------------------------------------------------------------- triggers

    def _hub(self) -> Any:
        hub = self.context.triggers
        if hub is None:
            raise DeliveryError(f"sink {self.name}: no trigger hub (not running in a station)")
        return hub

    def _trigger(self, camera: str, part_id: str, job: str, **ids: str) -> None:
        self._hub().put(camera, Trigger(job, part_id=part_id, at=time.perf_counter(), **ids))

    def _tag_trigger(self, camera: str) -> Any:
        async def start_job(part_id: str) -> str | None:
            vision = self.vision[camera]
            handshake = self.handshakes[camera]
            if self.cameras[camera].trigger != "plc":
                handshake.refusal = f'camera {camera} is free-running (trigger = "free")'
                return None
            if vision.auto_state != "ContinuousExecution":
                handshake.refusal = f"camera {camera} is {vision.state}, not ContinuousExecution"
                return None
            job = self._hub().new_job_id(camera)
            self._trigger(camera, part_id, job)
            return job

        return start_job

    async def _post_write(self, event: Any, _dispatcher: Any) -> None:
        for write in event.request_params.NodesToWrite:
            target = self._by_node.get(write.NodeId)
            if target is None:
                continue
            camera, tag = target
            await self.handshakes[camera].plc_wrote(tag, write.Value.Value.Value)


class _LocalTags:
    """Handshake tags on this server's own address space."""

    def __init__(self, vision: VisionSystem) -> None:
        self.vision = vision

    async def write(self, values: dict[str, Any]) -> None:
        await self.vision.write_values(self.vision.tags, values)

    async def read(self, name: str) -> Any:
        return await self.vision.tags[name].read_value()
