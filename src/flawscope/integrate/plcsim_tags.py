"""The PLC simulator's two views of the handshake tags, and its event and result unpacking.

``ClientTags`` reads and writes the station's tags over OPC UA (tags and methods modes);
``ServerTags`` holds them on the simulator's own server (serve mode). Both offer the same
``wait``/``read``/``write`` that :class:`~flawscope.integrate.plcsim.PlcSim` scans.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from flawscope.integrate.opcua.handshake import TAGS


def _ua() -> Any:
    from asyncua import ua

    return ua


def result_content(content: Any) -> dict[str, Any]:
    """A result's ``ResultContent`` key-value pairs as a dict."""
    out = {}
    for item in content or []:
        pair = getattr(item, "Value", item)
        key = getattr(getattr(pair, "Key", None), "Name", None)
        if key:
            out[key] = getattr(pair.Value, "Value", pair.Value)
    return out


class Events:
    """Event notifications of a subscription, put on a queue."""

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue

    def event_notification(self, event: Any) -> None:
        """Called by asyncua for one event."""
        self.queue.put_nowait(event)


class ClientTags:
    """The station's handshake tags, read and written over OPC UA.

    Between scans the PLC waits for a change of ResultReady or TriggerAck reported by a subscription
    (publishing interval = the scan period), or for the scan period when it polls.
    """

    def __init__(self, client: Any, ns: int, camera: str) -> None:
        ua = _ua()
        self.client = client
        self.nodes = {t.name: client.get_node(ua.NodeId(f"{camera}.Handshake.{t.name}", ns)) for t in TAGS}
        self.kinds = {t.name: t.kind for t in TAGS}
        self.changed: asyncio.Event | None = None

    async def watch(self, period_ms: float) -> None:
        """Be told of ResultReady and TriggerAck changes instead of polling."""
        self.changed = asyncio.Event()
        subscription = await self.client.create_subscription(period_ms, self)
        await subscription.subscribe_data_change([self.nodes["ResultReady"], self.nodes["TriggerAck"]])

    def datachange_notification(self, _node: Any, _value: Any, _data: Any) -> None:
        """Called by asyncua for a changed tag: wakes the scan."""
        if self.changed is not None:
            self.changed.set()

    async def wait(self, scan_s: float) -> None:
        """Until the next scan (a change or the scan period)."""
        if self.changed is None:
            await asyncio.sleep(scan_s)
            return
        # A missed notification costs at most this long: the tags are read again anyway.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), 0.1)
        self.changed.clear()

    async def read(self, names: list[str]) -> dict[str, Any]:
        """The named tags' values."""
        values = await self.client.read_values([self.nodes[n] for n in names])
        return dict(zip(names, values, strict=True))

    async def write(self, values: dict[str, Any]) -> None:
        """Write tag name -> value, each with its declared type."""
        ua = _ua()
        nodes = [self.nodes[n] for n in values]
        data = [ua.DataValue(ua.Variant(v, ua.VariantType[self.kinds[n]])) for n, v in values.items()]
        await self.client.write_values(nodes, data)


class ServerTags:
    """The tags on the simulator's own server (serve mode): read locally every scan."""

    def __init__(self, server: Any, nodes: dict[str, Any]) -> None:
        self.server = server
        self.nodes = nodes
        self.kinds = {t.name: t.kind for t in TAGS}

    async def wait(self, scan_s: float) -> None:
        """Until the next scan (a change or the scan period)."""
        await asyncio.sleep(scan_s)

    async def read(self, names: list[str]) -> dict[str, Any]:
        """The named tags' values."""
        return {n: self.server.read_attribute_value(self.nodes[n].nodeid).Value.Value for n in names}

    async def write(self, values: dict[str, Any]) -> None:
        """Write tag name -> value, each with its declared type."""
        ua = _ua()
        for name, value in values.items():
            variant = ua.Variant(value, ua.VariantType[self.kinds[name]])
            await self.server.write_attribute_value(self.nodes[name].nodeid, ua.DataValue(variant))
