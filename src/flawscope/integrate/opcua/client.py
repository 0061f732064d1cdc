"""Client mode: the station writes its results into the PLC's own OPC UA server (sink ``opcua-client``).

For PLCs whose OPC UA server holds the handshake tags (a data block exposed over OPC UA): the
station connects as a client, maps each handshake tag (:mod:`flawscope.integrate.opcua.handshake`)
to a node id of the PLC, checks on connecting that every node exists with the right type, watches
the tags the PLC writes (Trigger, ResultAck, ...) through a subscription and writes the others.
Delivery is the same handshake as in server mode: one result at a time, held until ResultAck.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flawscope.config import Problem
from flawscope.errors import InputError
from flawscope.integrate.opcua.handshake import PLC_TAGS, TAG_KINDS, Handshake
from flawscope.integrate.opcua.loop import LoopThread
from flawscope.integrate.opcua.security import POLICIES, certificate_problems, secure_client
from flawscope.integrate.payload import camera_of
from flawscope.integrate.registry import DeliveryError, Sink, SinkContext, register_sink
from flawscope.types import InspectionRecord

logger = logging.getLogger(__name__)


def _ua() -> Any:
    """Asyncua's ``ua`` module, untyped (its generated structures are made at run time)."""
    from asyncua import ua

    return ua


REQUIRED = ("ResultReady", "ResultAck", "ResultId", "OutcomeCode")
TRIGGER_TAGS = ("Trigger", "TriggerAck")


@dataclass(frozen=True)
class OpcuaClientOptions:
    """``[sink.NAME]`` with ``type = "opcua-client"``.

    Attributes:
        endpoint: the PLC's OPC UA server, ``opc.tcp://HOST:PORT/PATH``.
        nodes: handshake tag -> the PLC's node id (``ns=3;s=DB10.ResultReady``); ResultReady,
            ResultAck, ResultId and OutcomeCode at least, Trigger and TriggerAck for a PLC-triggered
            camera; other tags as the PLC program has them.
        security: ``None``, ``Basic256Sha256_Sign`` or ``Basic256Sha256_SignAndEncrypt``.
        certificate: the station's client certificate (its SAN holds application_uri).
        private_key: its key.
        application_uri: the station's client application URI.
        trust_store: folder of the PLC server certificates trusted.
        username: user name ("" for anonymous).
        password_env: environment variable holding the password.
        buffer_depth: results the PLC may be behind before ResultOverrun.
        ack_timeout_s: ResultAck watchdog.
        trigger_timeout_s: watchdog on the PLC dropping Trigger.
        heartbeat_s: VisionHeartbeat period.
        plc_watchdog_s: report PlcHeartbeat silence after this long (0: not watched).
        publishing_interval_ms: how often the PLC's changes are reported to the station.
        timeout_s: connection and request timeout.
    """

    endpoint: str
    nodes: dict[str, str]
    security: str = "Basic256Sha256_SignAndEncrypt"
    certificate: Path | None = None
    private_key: Path | None = None
    application_uri: str = "urn:flawscope:station:client"
    trust_store: Path | None = None
    username: str = ""
    password_env: str = ""
    buffer_depth: int = field(default=8, metadata={"min": 1})
    ack_timeout_s: float = field(default=5.0, metadata={"min": 0.01})
    trigger_timeout_s: float = field(default=5.0, metadata={"min": 0.01})
    heartbeat_s: float = field(default=1.0, metadata={"min": 0.05})
    plc_watchdog_s: float = field(default=0.0, metadata={"min": 0.0})
    publishing_interval_ms: float = field(default=10.0, metadata={"min": 0.0})
    timeout_s: float = field(default=5.0, metadata={"min": 0.1})

    def validate(self) -> list[Problem]:
        """Cross-field checks: node map, security."""
        ua = _ua()

        problems = []
        if urlsplit(self.endpoint).scheme != "opc.tcp":
            problems.append(Problem("endpoint", f"must be opc.tcp://HOST:PORT/PATH, got {self.endpoint!r}"))
        if self.security not in POLICIES:
            problems.append(
                Problem("security", f"unknown policy {self.security!r} (known: {', '.join(POLICIES)})")
            )
        elif self.security != "None" and (self.certificate is None or self.private_key is None):
            problems.append(
                Problem("certificate", "a signed/encrypted policy needs certificate and private_key")
            )
        for tag, node in self.nodes.items():
            if tag not in TAG_KINDS:
                problems.append(
                    Problem("nodes", f"unknown handshake tag {tag!r} (known: {', '.join(TAG_KINDS)})")
                )
                continue
            try:
                ua.NodeId.from_string(node)
            except (ValueError, ua.UaError, Exception):
                problems.append(
                    Problem("nodes", f"{tag} = {node!r} is not a node id (like ns=3;s=DB10.{tag})")
                )
        missing = [t for t in REQUIRED if t not in self.nodes]
        if missing:
            problems.append(Problem("nodes", f"map at least {', '.join(missing)}"))
        return problems


@register_sink(
    "opcua-client", config=OpcuaClientOptions, summary="handshake tags in the PLC's own OPC UA server"
)
class OpcuaClientSink(Sink):
    """Writes results into a PLC's OPC UA server through the tag handshake, and reads its triggers."""

    max_batch = 1  # the handshake acknowledges one result at a time: the cursor follows each

    def __init__(self, name: str, options: OpcuaClientOptions, context: SinkContext) -> None:
        super().__init__(name, options, context)
        chosen = context.sink.cameras or tuple(c.name for c in context.station.cameras)
        if len(chosen) != 1:
            raise InputError(f"sink {name}", 'an opcua-client sink serves one camera: set cameras = ["..."]')
        self.camera = context.station.camera(chosen[0])
        self.takes_triggers = self.camera.trigger == "plc" and "Trigger" in options.nodes  # type: ignore[misc]
        self._loop: LoopThread | None = None
        self._client: Any = None
        self._nodes: dict[str, Any] = {}
        self.handshake: Handshake | None = None
        self._connected = False
        self.last_error = ""

    # ------------------------------------------------------------------------------ lifecycle

    def open(self) -> None:
        """Connect to the PLC, check the nodes, subscribe to the PLC's tags, start the handshake.

        Raises:
            DeliveryError: the PLC is unreachable, refuses the session, or a node is missing or mistyped.
        """
        self._loop = LoopThread(f"opcua-client-{self.name}")
        try:
            self._loop.run(self._open(), timeout_s=self.options.timeout_s * 4)
        except DeliveryError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise DeliveryError(f"sink {self.name}: PLC {self.options.endpoint}: {_describe(exc)}") from None

    async def _open(self, start: bool = True) -> None:
        from asyncua import Client

        ua = _ua()

        opts = self.options
        client = Client(opts.endpoint, timeout=opts.timeout_s)
        await secure_client(
            client,
            policy=opts.security,
            certificate=opts.certificate,
            private_key=opts.private_key,
            trust_store=opts.trust_store,
            username=opts.username,
            password=os.environ.get(opts.password_env, "") if opts.password_env else "",
            application_uri=opts.application_uri,
        )
        await client.connect()
        self._client = client
        problems = []
        for tag, text in opts.nodes.items():
            node = client.get_node(ua.NodeId.from_string(text))
            try:
                data_type = await node.read_data_type()
            except ua.UaStatusCodeError as exc:
                problems.append(f"tag {tag}: node {text}: {exc}")
                continue
            expected = getattr(ua.ObjectIds, TAG_KINDS[tag])
            if data_type.NamespaceIndex != 0 or data_type.Identifier != expected:
                name = ua.ObjectIdNames.get(data_type.Identifier, data_type.to_string())
                problems.append(f"tag {tag}: node {text} is {name}, expected {TAG_KINDS[tag]}")
            self._nodes[tag] = node
        if problems:
            raise DeliveryError(f"sink {self.name}: PLC {opts.endpoint}: " + "; ".join(problems))
        if not start:
            return
        initial_ack = bool(await self._nodes["ResultAck"].read_value())
        self.handshake = Handshake(
            self.camera.name,
            _RemoteTags(self),
            self._start_job,
            buffer_depth=opts.buffer_depth,
            ack_timeout_s=opts.ack_timeout_s,
            trigger_timeout_s=opts.trigger_timeout_s,
            heartbeat_s=opts.heartbeat_s,
            plc_watchdog_s=opts.plc_watchdog_s,
        )
        await self.handshake.start(initial_ack=initial_ack)
        watched = [self._nodes[t] for t in PLC_TAGS if t in self._nodes]
        subscription = await client.create_subscription(opts.publishing_interval_ms, _Changes(self))
        await subscription.subscribe_data_change(watched)
        self._connected = True
        logger.info("sink %s: connected to PLC %s", self.name, opts.endpoint)

    async def _start_job(self, part_id: str) -> str | None:
        from flawscope.acquire.triggered import Trigger

        hub = self.context.triggers
        if hub is None or self.camera.trigger != "plc":
            if self.handshake is not None:
                self.handshake.refusal = f"camera {self.camera.name} does not take PLC triggers"
            return None
        import time

        job = hub.new_job_id(self.camera.name)
        hub.put(self.camera.name, Trigger(job, part_id=part_id, at=time.perf_counter()))
        return job

    def close(self) -> None:
        """Disconnect from the PLC."""
        loop, self._loop = self._loop, None
        client, self._client = self._client, None
        self._connected = False
        if loop is None:
            return
        if client is not None:
            try:
                loop.run(self._close(client), timeout_s=self.options.timeout_s)
            except Exception as exc:
                logger.debug("sink %s: disconnect: %s", self.name, exc)
        loop.stop()

    async def _close(self, client: Any) -> None:
        if self.handshake is not None:
            await self.handshake.stop()
        await client.disconnect()

    def health(self) -> dict[str, Any]:
        """Connected to the PLC, and the handshake's state."""
        return {
            "connected": self._connected,
            "plc": self.options.endpoint,
            **({"handshake": self.handshake.health()} if self.handshake else {}),
        }

    def check(self) -> list[str]:
        """Certificates, then connect and check every node id and type."""
        opts = self.options
        problems = []
        if opts.security != "None":
            problems += certificate_problems(
                opts.certificate, opts.private_key, opts.trust_store, opts.application_uri
            )
        if opts.password_env and not os.environ.get(opts.password_env):
            problems.append(f"environment variable {opts.password_env} (the PLC password) is not set")
        if problems:
            return problems
        probe = OpcuaClientSink(self.name, opts, self.context)
        try:
            probe._loop = LoopThread("opcua-check")
            probe._loop.run(probe._check(), timeout_s=opts.timeout_s * 4)
        except DeliveryError as exc:
            problems.append(str(exc).removeprefix(f"sink {self.name}: "))
        except Exception as exc:
            problems.append(f"PLC {opts.endpoint}: {_describe(exc)}")
        finally:
            probe.close()
        return problems

    async def _check(self) -> None:
        """Connect and check the nodes, writing nothing."""
        await self._open(start=False)

    # ------------------------------------------------------------------------------- delivery

    def deliver(self, records: Sequence[InspectionRecord]) -> int:
        """Present each record of its camera through the handshake; return how many were acknowledged."""
        if self._loop is None or self.handshake is None or not self._connected:
            raise DeliveryError(f"sink {self.name}: not connected to PLC {self.options.endpoint}")
        try:
            done, problem = self._loop.run(self._deliver(list(records), self.backlog))
        except Exception as exc:
            raise DeliveryError(f"sink {self.name}: PLC {self.options.endpoint}: {_describe(exc)}") from None
        if problem:
            raise DeliveryError(f"sink {self.name}: {problem}", delivered=done)
        return done

    async def _deliver(self, records: list[InspectionRecord], backlog: int) -> tuple[int, str]:
        assert self.handshake is not None
        own = self.context.station.record_station(self.camera.name)
        for done, record in enumerate(records):
            if record.kind != "inspection" or record.station != own or camera_of(record) != self.camera.name:
                continue
            if not self._connected:
                return done, f"connection to PLC {self.options.endpoint} lost"
            if not await self.handshake.present(record, backlog - done):
                return done, f"camera {self.camera.name}: {self.handshake.error}"
        return len(records), ""


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "no answer (timeout)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens there)"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]


class _RemoteTags:
    """Handshake tags in the PLC's server: only the mapped ones are written, in one Write request."""

    def __init__(self, sink: OpcuaClientSink) -> None:
        self.sink = sink

    async def write(self, values: dict[str, Any]) -> None:
        ua = _ua()

        nodes, variants = [], []
        for name, value in values.items():
            node = self.sink._nodes.get(name)
            if node is None or (name in PLC_TAGS and name != "ResultOverrun"):
                continue
            nodes.append(node)
            variants.append(ua.DataValue(ua.Variant(value, ua.VariantType[TAG_KINDS[name]])))
        if nodes and self.sink._client is not None:
            await self.sink._client.write_values(nodes, variants)

    async def read(self, name: str) -> Any:
        node = self.sink._nodes.get(name)
        if node is None:
            raise KeyError(f"tag {name} is not mapped to a node of the PLC")
        return await node.read_value()


class _Changes:
    """Subscription handler: the PLC's tag changes go to the handshake."""

    def __init__(self, sink: OpcuaClientSink) -> None:
        self.sink = sink
        self.by_node: dict[Any, str] = {}

    async def datachange_notification(self, node: Any, value: Any, _data: Any) -> None:
        if not self.by_node:
            self.by_node = {n.nodeid: t for t, n in self.sink._nodes.items()}
        tag = self.by_node.get(node.nodeid)
        if tag is not None and self.sink.handshake is not None:
            await self.sink.handshake.plc_wrote(tag, value)

    def status_change_notification(self, status: Any) -> None:
        logger.warning("sink %s: PLC subscription status %s", self.sink.name, status)
        self.sink._connected = False
