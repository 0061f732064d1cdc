"""``flawscope plc-sim``: a PLC over OPC UA, to rehearse and measure a station without one.

Three ways to be the PLC:

- ``tags`` (client of the station's server): triggers parts through the tag handshake (Trigger,
  TriggerPartId, waits for TriggerAck), reads every result when ResultReady toggles and copies it to
  ResultAck, scanning the tags every ``scan_ms`` like a PLC cycle;
- ``methods`` (client of the station's server): calls ``StartSingleJob`` per part and takes the
  ``ResultReady`` events, fetching a result it did not get as an event with ``GetResultListFiltered``;
- ``serve``: *is* the PLC's own OPC UA server holding the handshake tags at ``ns=<plc>;s=PLC.<tag>``
  (for a station sink in client mode) and runs the same PLC logic on them.

With ``rate`` 0 it only takes results (a free-running station). It counts parts triggered, results
received, results missing (a triggered part without its result at the end), late (after
``deadline_ms``), duplicated (an id received before) and out of order (a lower seq after a higher),
and the trigger-to-result-readable time of each triggered part. ``record`` appends every result
received to a JSON-lines file (what the soak benchmark checks across restarts). It reconnects
after losing the station, as a PLC does. The counting is :mod:`flawscope.integrate.plcsim_ledger`,
the tags and events :mod:`flawscope.integrate.plcsim_tags`; this module is the PLC's program in
each mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flawscope.integrate.opcua.handshake import TAGS
from flawscope.integrate.plcsim_ledger import PlcSimStats, ResultLedger
from flawscope.integrate.plcsim_tags import ClientTags, Events, ServerTags, result_content

logger = logging.getLogger(__name__)

RESULT_TAGS = ("ResultReady", "TriggerAck", "ResultId", "ResultSeq", "ResultPartId", "OutcomeCode", "Accept")


def _ua() -> Any:
    from asyncua import ua

    return ua


@dataclass(frozen=True)
class PlcSimOptions:
    """How the simulated PLC behaves.

    Attributes:
        endpoint: the station's server (tags, methods) or where to serve (serve).
        mode: ``tags``, ``methods`` or ``serve``.
        camera: the camera (VisionSystem) to talk to.
        namespace: the station's namespace URI (default: the first ``urn:flawscope:`` one).
        parts: parts to trigger (0 with rate 0: only take results until stopped).
        rate: triggers per second (0: as soon as the previous result is in).
        prefix: part ids are ``<prefix>-<n>``.
        scan_ms: tag scan period (the subscription's publishing interval, unless polling); 0: the
            station's server sends each change of ResultReady/TriggerAck at once (no publishing
            cycle on either side; what an event-driven PLC gets).
        poll: read the tags every scan instead of being told of their changes by a subscription.
        deadline_ms: a result later than this after its trigger counts as late.
        ack: acknowledge results (False: a PLC that never acknowledges).
        security: policy; certificate/private_key/trust_store/username/password as for the station.
        record: append every result received to this JSON-lines file.
    """

    endpoint: str
    mode: str = "tags"
    camera: str = "top"
    namespace: str = ""
    parts: int = 0
    rate: float = 0.0
    prefix: str = "plc"
    scan_ms: float = 1.0
    poll: bool = False
    deadline_ms: float = 1000.0
    ack: bool = True
    security: str = "None"
    certificate: Path | None = None
    private_key: Path | None = None
    trust_store: Path | None = None
    username: str = ""
    password: str = ""
    application_uri: str = "urn:flawscope:plc-sim"
    record: Path | None = None


class PlcSim:
    """The simulated PLC (asyncio; :meth:`run` until done or ``stop``)."""

    def __init__(self, options: PlcSimOptions) -> None:
        self.options = options
        self.ledger = ResultLedger(options.deadline_ms)
        self.stop_event = asyncio.Event()
        self.started = asyncio.Event()

    @property
    def stats(self) -> PlcSimStats:
        """What this PLC saw so far (see :class:`~flawscope.integrate.plcsim_ledger.ResultLedger`)."""
        return self.ledger.stats

    @property
    def seen(self) -> set[str]:
        """The result ids received."""
        return self.ledger.seen

    def _parts(self) -> Any:
        n = 0
        began = time.monotonic()
        while self.options.parts == 0 or n < self.options.parts:
            due = began + n / self.options.rate if self.options.rate else 0.0
            yield f"{self.options.prefix}-{n:06d}", due
            n += 1

    @property
    def triggering(self) -> bool:
        """Whether this PLC triggers parts (else it only takes results)."""
        return self.options.parts > 0 or self.options.rate > 0

    # --------------------------------------------------------------------------------- running

    async def run(self) -> PlcSimStats:
        """Run until the parts are done (and their results in, or late) or :meth:`stop`."""
        self.ledger.open(self.options.record)
        try:
            if self.options.mode == "serve":
                await self._serve()
            else:
                await self._client_loop()
        finally:
            self.ledger.close()
        return self.stats

    def stop(self) -> None:
        """Ask the run to end."""
        self.stop_event.set()

    async def _connect(self) -> Any:
        from asyncua import Client

        from flawscope.integrate.opcua.security import secure_client

        opts = self.options
        client = Client(opts.endpoint, timeout=5)
        await secure_client(
            client,
            policy=opts.security,
            certificate=opts.certificate,
            private_key=opts.private_key,
            trust_store=opts.trust_store,
            username=opts.username,
            password=opts.password,
            application_uri=opts.application_uri,
        )
        await client.connect()
        if opts.mode == "methods":
            # StartSingleJob's arguments are Machine Vision structures; the tags are scalars, and
            # building every type of the server takes seconds of CPU at each (re)connection.
            await client.load_data_type_definitions()
        return client

    async def _namespace(self, client: Any) -> int:
        """The namespace of the station's nodes: given, or the one of the camera's object under Objects."""
        if self.options.namespace:
            return int(await client.get_namespace_index(self.options.namespace))
        for child in await client.nodes.objects.get_children():
            name = await child.read_browse_name()
            if name.Name == self.options.camera:
                return int(child.nodeid.NamespaceIndex)
        raise RuntimeError(f"the server has no object {self.options.camera!r} under Objects")

    async def _client_loop(self) -> None:
        parts = self._parts()
        delay = 0.2
        while not self.stop_event.is_set():
            try:
                client = await self._connect()
            except Exception as exc:
                logger.info("plc-sim: cannot connect to %s (%s); retrying", self.options.endpoint, exc)
                await self._sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.2
            self.started.set()
            try:
                ns = await self._namespace(client)
                if self.options.mode == "methods":
                    done = await self._methods(client, ns, parts)
                else:
                    tags = ClientTags(client, ns, self.options.camera)
                    if not self.options.poll:
                        await tags.watch(self.options.scan_ms)
                    done = await self._tags(tags, parts)
                if done:
                    return
            except Exception as exc:
                if self.stop_event.is_set():
                    return
                self.stats.reconnects += 1
                logger.info(
                    "plc-sim: connection lost (%s); reconnecting",
                    exc,
                    exc_info=logger.isEnabledFor(logging.DEBUG),
                )
            finally:
                with contextlib.suppress(Exception):
                    await client.disconnect()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), max(0.0, seconds))

    # ------------------------------------------------------------------------------ tag mode

    async def _tags(self, tags: Any, parts: Any) -> bool:
        """The PLC program over handshake tags; True when every part is done."""
        scan = self.options.scan_ms / 1000
        state = await tags.read(["ResultReady", "ResultAck"])
        acked = bool(state["ResultAck"])
        waiting_ack = False  # Trigger raised, TriggerAck not yet seen
        dropping = False  # Trigger dropped, TriggerAck not yet false (the next trigger waits for it)
        current: tuple[str, float] | None = next(parts, None) if self.triggering else None
        exhausted = current is None and self.triggering
        end_by = None
        while not self.stop_event.is_set():
            now = time.monotonic()
            idle = not waiting_ack and not dropping and not self.ledger.triggered_at
            if current is not None and idle and now >= current[1]:
                part_id = current[0]
                self.ledger.trigger(part_id)
                await tags.write({"TriggerPartId": part_id, "Trigger": True})
                waiting_ack = True
                current = next(parts, None)
                exhausted = current is None
            values = await tags.read(list(RESULT_TAGS))
            if waiting_ack and values["TriggerAck"]:
                await tags.write({"Trigger": False})
                waiting_ack, dropping = False, True
            elif dropping and not values["TriggerAck"]:
                dropping = False
            ready = bool(values["ResultReady"])
            if ready != acked:
                self.ledger.got(
                    str(values["ResultId"]),
                    int(values["ResultSeq"]),
                    str(values["ResultPartId"]),
                    int(values["OutcomeCode"]),
                    {"accept": bool(values["Accept"])},
                )
                if self.options.ack:
                    await tags.write({"ResultAck": ready})
                    acked = ready
            if exhausted and not self.ledger.triggered_at:
                return True
            if exhausted:
                end_by = end_by or now + self.options.deadline_ms / 1000 * 4
                if now > end_by:
                    return True
            ready_to_trigger = not waiting_ack and not dropping and not self.ledger.triggered_at
            if current is not None and ready_to_trigger and time.monotonic() >= current[1]:
                continue  # the next part is due now: no change to wait for
            await tags.wait(scan)
        return True

    # --------------------------------------------------------------------------- method mode

    async def _methods(self, client: Any, ns: int, parts: Any) -> bool:
        ua = _ua()
        from flawscope.integrate.opcua.vision import MV_URI, RESULT_READY_EVENT_TYPE

        camera = self.options.camera
        mv = await client.get_namespace_index(MV_URI)
        system = client.get_node(ua.NodeId(camera, ns))
        auto = client.get_node(ua.NodeId(f"{camera}.VisionStateMachine.AutomaticModeStateMachine", ns))
        start = client.get_node(
            ua.NodeId(f"{camera}.VisionStateMachine.AutomaticModeStateMachine.StartSingleJob", ns)
        )
        events: asyncio.Queue[Any] = asyncio.Queue()
        handler = Events(events)
        subscription = await client.create_subscription(1, handler)
        await subscription.subscribe_events(system, ua.NodeId(RESULT_READY_EVENT_TYPE, mv))
        arrived: dict[str, Any] = {}
        for part_id, due in parts:
            if self.stop_event.is_set():
                return True
            await self._sleep(due - time.monotonic())
            self.ledger.trigger(part_id)
            job = await auto.call_method(
                start,
                ua.MeasIdDataType(Id=f"meas-{part_id}"),
                ua.PartIdDataType(Id=part_id),
                ua.RecipeIdExternalDataType(Id="default"),
                ua.ProductIdDataType(Id="sim-product"),
                ua.Variant([], ua.VariantType.Variant),
            )
            job_id = job[0].Id if isinstance(job, list) else job.Id
            deadline = time.monotonic() + self.options.deadline_ms / 1000 * 4
            while job_id not in arrived and time.monotonic() < deadline:
                try:
                    event = await asyncio.wait_for(events.get(), max(0.001, deadline - time.monotonic()))
                except TimeoutError:
                    break
                arrived[event.JobId.Id] = event
                self.ledger.got(
                    event.ResultId.Id,
                    int(event.ResultId.Id.split("-")[0]),
                    event.PartId.Id if event.PartId else "",
                    result_content(event.ResultContent).get("OutcomeCode", 0),
                    {"job_id": event.JobId.Id},
                )
            if job_id not in arrived:
                await self._fetch(client, ns, job_id)
        await subscription.delete()
        return True

    async def _fetch(self, client: Any, ns: int, job_id: str) -> None:
        """A result whose event did not come: ask the result management for it by job id."""
        ua = _ua()
        camera = self.options.camera
        manager = client.get_node(ua.NodeId(f"{camera}.ResultManagement", ns))
        method = client.get_node(ua.NodeId(f"{camera}.ResultManagement.GetResultListFiltered", ns))
        out = await manager.call_method(
            method,
            ua.Variant(0, ua.VariantType.Int32),
            *[ua.Variant(None, ua.VariantType.ExtensionObject)] * 7,
            ua.JobIdDataType(Id=job_id),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(0, ua.VariantType.UInt32),
            ua.Variant(1000, ua.VariantType.Int32),
        )
        for result in out[3] or []:
            part = result.PartId.Id if result.PartId else ""
            self.ledger.got(
                result.ResultId.Id,
                int(result.ResultId.Id.split("-")[0]),
                part,
                result_content(result.ResultContent).get("OutcomeCode", 0),
                {"job_id": job_id, "fetched": True},
            )

    # ----------------------------------------------------------------------------- serve mode

    async def _serve(self) -> None:
        from asyncua import Server

        ua = _ua()
        server = Server()
        await server.init()
        server.set_endpoint(self.options.endpoint)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ns = await server.register_namespace("urn:flawscope:plc-sim")
        plc = await server.nodes.objects.add_object(ua.NodeId("PLC", ns), ua.QualifiedName("PLC", ns))
        nodes = {}
        for tag in TAGS:
            node = await plc.add_variable(
                ua.NodeId(f"PLC.{tag.name}", ns),
                ua.QualifiedName(tag.name, ns),
                tag.initial,
                varianttype=ua.VariantType[tag.kind],
            )
            await node.set_writable()
            nodes[tag.name] = node
        await server.start()
        self.started.set()
        try:
            await self._tags(ServerTags(server, nodes), self._parts())
            await self.stop_event.wait()  # a PLC's server stays up when its parts are done
        finally:
            await server.stop()
