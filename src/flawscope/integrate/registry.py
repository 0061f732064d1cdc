"""The sink registry and the lifecycle every sink follows.

A sink delivers committed audit records to one peer (a broker, an MES endpoint, a PLC). It is one
module: a :class:`Sink` subclass and a frozen dataclass of its options, registered together::

    @register_sink("mqtt", config=MqttOptions)
    class MqttSink(Sink): ...

The station's forwarder (:mod:`flawscope.integrate.outbox`) owns the order, the retries and the
durable cursor; a sink only has to

- :meth:`Sink.open` its connection (raise :class:`DeliveryError` when the peer is not there),
- :meth:`Sink.deliver` records in order and return how many of them the peer acknowledged,
- :meth:`Sink.close` it, and say how it is doing in :meth:`Sink.health`;
- :meth:`Sink.check` reaches the peer for ``flawscope station check`` without delivering anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from flawscope.errors import FlawscopeError
from flawscope.types import InspectionRecord

if TYPE_CHECKING:
    from flawscope.acquire.triggered import TriggerHub
    from flawscope.config import SinkConfig, StationConfig


class DeliveryError(FlawscopeError):
    """The peer could not take the records now (down, slow, refusing the connection): retry later.

    Args:
        message: what went wrong, naming the peer.
        retry_after_s: the peer asked to wait at least this long (HTTP ``Retry-After``).
        delivered: records of the call acknowledged before the failure (they are not re-sent).
    """

    def __init__(self, message: str, retry_after_s: float | None = None, delivered: int = 0) -> None:
        self.retry_after_s = retry_after_s
        self.delivered = delivered
        super().__init__(message)


class RecordRefused(FlawscopeError):  # noqa: N818  (what happened, not an "Error" of ours)
    """The peer refused one record for good (retrying the same bytes cannot help): dead-letter it.

    Attributes:
        seq: the refused record's ``seq``.
        reason: what the peer said.
    """

    def __init__(self, seq: int, reason: str) -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(f"record {seq} refused: {reason}")


class SinkDisabled(FlawscopeError):  # noqa: N818
    """The peer asked not to be sent anything any more (an HTTP 410): the sink stops for good.

    Its records then go to the dead letters until ``flawscope sink replay`` re-sends them.

    Args:
        message: what the peer said, naming the sink.
        delivered: records of the call acknowledged before.
    """

    def __init__(self, message: str, delivered: int = 0) -> None:
        self.delivered = delivered
        super().__init__(message)


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need from its station besides its own options.

    Attributes:
        station: the whole station configuration (names for topics, cameras, the audit URL).
        sink: this sink's configuration.
        triggers: where PLC triggers go (for sinks that accept them); None outside a station.
        audit_url: the audit store's URL, for sinks that serve past results.
        camera_problem: what is wrong with a camera now (source down, line stopped), ``""`` when
            nothing is; sinks that show a machine state (OPC UA Error) ask it.
    """

    station: StationConfig
    sink: SinkConfig
    triggers: TriggerHub | None = None
    audit_url: str = ""
    camera_problem: Callable[[str], str] | None = None


class Sink:
    """Base class of the sinks (see the module docstring for the lifecycle).

    Attributes:
        name: the sink's name in the station.
        options: its options (the dataclass registered with its type).
        context: its station.
        backlog: records committed but not yet delivered, kept up to date by the forwarder (a sink
            may show it to its peer, as the PLC handshake does).
    """

    type: ClassVar[str] = ""
    #: Close and reopen the connection after a failed delivery (a server sink keeps running).
    reopen_on_error: ClassVar[bool] = True
    #: The sink gives PLC triggers to cameras with ``trigger = "plc"``.
    takes_triggers: ClassVar[bool] = False
    #: Most records handed over at once (None: the station's ``max_batch``). A sink whose peer
    #: acknowledges one record at a time says 1, so the cursor follows each acknowledgement.
    max_batch: ClassVar[int | None] = None

    def __init__(self, name: str, options: Any, context: SinkContext) -> None:
        self.name = name
        self.options = options
        self.context = context
        self.backlog = 0

    def open(self) -> None:
        """Connect to the peer.

        Raises:
            DeliveryError: the peer cannot be reached now (the forwarder retries).
        """

    def deliver(self, records: Sequence[InspectionRecord]) -> int:  # pragma: no cover - abstract
        """Deliver records, in order; return how many (from the first) the peer acknowledged.

        A sink may count records it has no use for (another camera's, an override) as delivered.

        Raises:
            DeliveryError: nothing more can be delivered now; its ``delivered`` says how many of
                this call's records were acknowledged before (the rest are retried later).
            RecordRefused: the first unacknowledged record is refused for good.
            SinkDisabled: the peer wants nothing more.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Disconnect (idempotent, safe after a failed open)."""

    def health(self) -> dict[str, Any]:
        """Protocol details for the status (``connected`` at least)."""
        return {"connected": True}

    def check(self) -> list[str]:
        """Problems reaching the peer now, for ``flawscope station check`` (``[]``: reachable)."""
        return []


@dataclass(frozen=True)
class SinkSpec:
    """A registered sink type: its class and its options dataclass."""

    kind: str
    cls: type[Sink]
    config: type[Any]
    summary: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)


SINKS: dict[str, SinkSpec] = {}
S = TypeVar("S", bound=type[Sink])


def register_sink(kind: str, *, config: type[Any], summary: str = "") -> Callable[[S], S]:
    """Class decorator registering a sink type with its options dataclass.

    Raises:
        ValueError: when the type is already registered.
    """

    def add(cls: S) -> S:
        if kind in SINKS:
            raise ValueError(f"sink type {kind!r} is already registered by {SINKS[kind].cls.__module__}")
        cls.type = kind
        SINKS[kind] = SinkSpec(kind, cls, config, summary or (cls.__doc__ or "").strip().split("\n")[0])
        return cls

    return add


def registered_sinks() -> dict[str, SinkSpec]:
    """Every registered sink type (importing the built-in sink modules first)."""
    import flawscope.integrate  # noqa: F401  (registers the built-in sinks)

    return dict(SINKS)


def make_sink(context: SinkContext) -> Sink:
    """Build the sink a configuration names (not opened yet)."""
    spec = registered_sinks()[context.sink.type]
    return spec.cls(context.sink.name, context.sink.options, context)
