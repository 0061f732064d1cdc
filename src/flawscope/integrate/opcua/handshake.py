"""The PLC tag handshake, for PLCs that exchange tags rather than call methods (as vision sensors do).

Tags (``W``: written by the PLC, the others by flawscope)::

    Trigger        W  rising edge: acquire one part (TriggerPartId names it)
    TriggerPartId  W  the part id of the next trigger ("" lets flawscope use the job id)
    TriggerAck        true once the trigger is taken; false again after the PLC drops Trigger
    Busy              parts triggered whose result is not presented yet
    ResultReady       TOGGLES when a new result is in the result tags (an edge, never a pulse)
    ResultAck      W  the PLC copies ResultReady here once it has read the result
    ResultId, ResultSeq, ResultPartId, ResultJobId, Outcome, OutcomeCode, Accept, Score,
    NormalizedScore, Category, ModelVersion, ThresholdVersion   the presented result
    ResultsBuffered   results waiting behind the presented one
    ResultOverrun  W  latched when more than buffer_depth results wait; the PLC writes false to clear
    VisionHeartbeat   toggles every heartbeat_s
    PlcHeartbeat   W  the PLC toggles it; no change for plc_watchdog_s is reported
    HandshakeError    the latest handshake problem, in words ("" when none)

Every step is held until acknowledged: the next result is presented only when ResultAck equals
ResultReady, so a PLC that misses a scan misses nothing; a result not acknowledged within
``ack_timeout_s`` is reported (the watchdog) and stays presented. Results are never skipped:
those waiting are in the audit log, counted in ResultsBuffered, and ResultOverrun tells the PLC it
is more than ``buffer_depth`` results behind (the parts concerned may have passed the reject gate,
so the PLC must treat a part without a result in time as a reject).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flawscope.integrate.opcua.results import job_id
from flawscope.integrate.payload import OUTCOME_CODES, result_id
from flawscope.types import InspectionRecord, Outcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tag:
    """One handshake tag: its name, OPC UA type, who writes it and its initial value."""

    name: str
    kind: str  # asyncua VariantType name
    plc_writes: bool
    initial: Any


TAGS: tuple[Tag, ...] = (
    Tag("Trigger", "Boolean", True, False),
    Tag("TriggerPartId", "String", True, ""),
    Tag("TriggerAck", "Boolean", False, False),
    Tag("Busy", "Boolean", False, False),
    Tag("ResultReady", "Boolean", False, False),
    Tag("ResultAck", "Boolean", True, False),
    Tag("ResultId", "String", False, ""),
    Tag("ResultSeq", "Int64", False, 0),
    Tag("ResultPartId", "String", False, ""),
    Tag("ResultJobId", "String", False, ""),
    Tag("Outcome", "String", False, ""),
    Tag("OutcomeCode", "Int32", False, 0),
    Tag("Accept", "Boolean", False, False),
    Tag("Score", "Double", False, 0.0),
    Tag("NormalizedScore", "Double", False, 0.0),
    Tag("Category", "String", False, ""),
    Tag("ModelVersion", "String", False, ""),
    Tag("ThresholdVersion", "Int32", False, 0),
    Tag("ResultsBuffered", "UInt32", False, 0),
    Tag("ResultOverrun", "Boolean", True, False),
    Tag("VisionHeartbeat", "Boolean", False, False),
    Tag("PlcHeartbeat", "Boolean", True, False),
    Tag("HandshakeError", "String", False, ""),
)
TAG_KINDS = {t.name: t.kind for t in TAGS}
PLC_TAGS = tuple(t.name for t in TAGS if t.plc_writes)


class TagIO(Protocol):
    """Where the tags live: this station's own OPC UA server, or the PLC's (client mode)."""

    async def write(self, values: dict[str, Any]) -> None:
        """Write tags (in the given order, as one request where the transport allows)."""

    async def read(self, name: str) -> Any:
        """The current value of one tag (the PLC's part id, read when its trigger arrives)."""


def result_tags(record: InspectionRecord) -> dict[str, Any]:
    """The result tags of a record (ResultReady not included)."""
    outcome = Outcome(record.outcome)
    score = record.score if math.isfinite(record.score) else 0.0
    normalized = record.normalized_score if math.isfinite(record.normalized_score) else 0.0
    return {
        "ResultId": result_id(record),
        "ResultSeq": record.seq or 0,
        "ResultPartId": record.part_id,
        "ResultJobId": job_id(record),
        "Outcome": outcome.value,
        "OutcomeCode": OUTCOME_CODES[outcome],
        "Accept": outcome.is_accept,
        "Score": score,
        "NormalizedScore": normalized,
        "Category": record.category or "",
        "ModelVersion": record.model_version,
        "ThresholdVersion": -1 if record.threshold_version is None else record.threshold_version,
    }


class Handshake:
    """The tag handshake of one camera (runs on the OPC UA event loop).

    Args:
        camera: camera name (for messages).
        io: where the tags are written.
        start_job: called with the PLC's part id when a trigger is accepted; returns the job id,
            or None when the vision system cannot take a trigger now (the reason is in ``refusal``).
        buffer_depth: results the PLC may be behind before ResultOverrun is set.
        ack_timeout_s: watchdog on ResultAck.
        trigger_timeout_s: watchdog on the PLC dropping Trigger after TriggerAck.
        heartbeat_s: VisionHeartbeat toggle period.
        plc_watchdog_s: PlcHeartbeat silence reported after this long (0: not watched).
    """

    def __init__(
        self,
        camera: str,
        io: TagIO,
        start_job: Callable[[str], Awaitable[str | None]],
        *,
        buffer_depth: int = 8,
        ack_timeout_s: float = 5.0,
        trigger_timeout_s: float = 5.0,
        heartbeat_s: float = 1.0,
        plc_watchdog_s: float = 0.0,
    ) -> None:
        self.camera = camera
        self.io = io
        self.start_job = start_job
        self.buffer_depth = buffer_depth
        self.ack_timeout_s = ack_timeout_s
        self.trigger_timeout_s = trigger_timeout_s
        self.heartbeat_s = heartbeat_s
        self.plc_watchdog_s = plc_watchdog_s
        self.ready = False  # the ResultReady value last written
        self.plc_ack = False  # the ResultAck value the PLC last wrote
        self.acked = True  # ResultAck == ResultReady
        self.presented: int | None = None  # seq of the result in the tags
        self.trigger_ack = False
        self.trigger_high = False
        self.trigger_at = 0.0
        self.overrun = False
        self.pending_jobs: set[str] = set()
        self.plc_heartbeat_at = time.monotonic()
        self.error = ""
        self.refusal = ""
        self.triggers = 0
        self.next_part_id = ""
        self.job_started: dict[str, float] = {}
        # Trigger accepted -> result in the tags, minus the part's own acquisition-to-verdict time:
        # what the handshake and the audit commit add (ms, the most recent results).
        self.overheads: deque[float] = deque(maxlen=2000)
        self.ack_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, initial_ack: bool = False) -> None:
        """Write every tag's initial value and start the heartbeat and watchdogs.

        Args:
            initial_ack: the PLC's ResultAck now; ResultReady starts equal to it (nothing pending),
                so that a PLC left with ResultAck true does not acknowledge the first result unread.
        """
        self.ready, self.plc_ack, self.acked = initial_ack, initial_ack, True
        await self.io.write({**{t.name: t.initial for t in TAGS}, "ResultReady": initial_ack})
        self._tasks.append(asyncio.ensure_future(self._heartbeat()))

    async def stop(self) -> None:
        """Stop the background tasks."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _heartbeat(self) -> None:
        beat = False
        while True:
            await asyncio.sleep(self.heartbeat_s)
            beat = not beat
            try:
                await self.io.write({"VisionHeartbeat": beat})
            except Exception as exc:  # the next beat tries again; client mode reports it elsewhere
                logger.debug("camera %s: heartbeat not written (%s)", self.camera, exc)
            if (
                self.trigger_ack
                and self.trigger_high
                and time.monotonic() - self.trigger_at > self.trigger_timeout_s
            ):
                await self._report(
                    f"the PLC has not dropped Trigger {self.trigger_timeout_s:g} s after TriggerAck"
                )
            silent = time.monotonic() - self.plc_heartbeat_at
            if self.plc_watchdog_s and silent > self.plc_watchdog_s:
                await self._report(
                    f"PlcHeartbeat has not changed for {silent:.0f} s (PLC down or not watching)"
                )

    async def _report(self, problem: str) -> None:
        if problem != self.error:
            logger.warning("camera %s handshake: %s", self.camera, problem)
        self.error = problem
        await self.io.write({"HandshakeError": problem})

    # ---------------------------------------------------------------------- the PLC's writes

    async def plc_wrote(self, name: str, value: Any) -> None:
        """React to a tag the PLC wrote (called by the tag transport)."""
        if name == "Trigger":
            await self._trigger(bool(value))
        elif name == "ResultAck":
            self.plc_ack = bool(value)
            if self.presented is not None and self.plc_ack == self.ready:
                self.acked = True
                self.ack_changed.set()
        elif name == "TriggerPartId":
            self.next_part_id = str(value or "")
        elif name == "PlcHeartbeat":
            self.plc_heartbeat_at = time.monotonic()
        elif name == "ResultOverrun" and not value:
            self.overrun = False

    async def _trigger(self, high: bool) -> None:
        rising = high and not self.trigger_high
        self.trigger_high = high
        if rising and not self.trigger_ack:
            # Read now: a subscription may report the trigger before the part id written with it.
            try:
                self.next_part_id = str(await self.io.read("TriggerPartId") or "")
            except Exception as exc:  # an unmapped tag (client mode): the job id names the part
                logger.debug("camera %s: TriggerPartId not read (%s)", self.camera, exc)
            job = await self.start_job(self.next_part_id)
            if job is None:
                await self._report(
                    f"trigger refused: {self.refusal or 'the vision system cannot take it now'}"
                )
                return
            self.triggers += 1
            self.pending_jobs.add(job)
            self.job_started[job] = time.perf_counter()
            self.trigger_ack = True
            self.trigger_at = time.monotonic()
            await self.io.write({"Busy": True, "TriggerAck": True})
        elif not high and self.trigger_ack:
            self.trigger_ack = False
            await self.io.write({"TriggerAck": False})

    # ---------------------------------------------------------------------------- results

    async def present(self, record: InspectionRecord, backlog: int) -> bool:
        """Put a result in the tags (toggling ResultReady) and wait for ResultAck.

        A result already presented and not yet acknowledged is not presented again (a retry only
        waits longer). Returns True once the PLC acknowledged it, False when the watchdog fired.
        """
        return await self.show(record, backlog) and await self.wait_ack()

    async def show(self, record: InspectionRecord, backlog: int) -> bool:
        """Put a result in the tags (toggling ResultReady) without waiting for its ResultAck.

        The previous result is held until acknowledged first (an unread result is never
        overwritten); a result already presented is not presented again. Returns False when the
        watchdog fired on the previous result (this one is not shown).
        """
        if self.presented != record.seq:
            # The previous result still unacknowledged is held (an unread result is never overwritten).
            if not self.acked and not await self._wait_ack():
                return False
            self.pending_jobs.discard(job_id(record))
            waiting = max(0, backlog - 1)
            if waiting > self.buffer_depth and not self.overrun:
                self.overrun = True
                logger.warning(
                    "camera %s: the PLC is %d results behind (buffer %d)",
                    self.camera,
                    waiting,
                    self.buffer_depth,
                )
            # ResultReady becomes the opposite of what the PLC last acknowledged: a toggle for a
            # PLC that follows the handshake, and never an instant "ack" for one that wrote ResultAck
            # out of turn.
            self.ready = not self.plc_ack
            self.acked = False
            self.ack_changed.clear()
            self.presented = record.seq
            values = {
                **result_tags(record),
                "ResultsBuffered": waiting,
                "ResultOverrun": self.overrun,
                "Busy": bool(self.pending_jobs),
                "ResultReady": self.ready,  # last: the result tags are in place when it toggles
            }
            await self.io.write(values)
            started = self.job_started.pop(job_id(record), None)
            if started is not None and math.isfinite(record.latency_ms):
                self.overheads.append((time.perf_counter() - started) * 1000 - record.latency_ms)
        return True

    async def wait_ack(self) -> bool:
        """Wait for the PLC to acknowledge the result presented; False when the watchdog fired."""
        return await self._wait_ack()

    async def _wait_ack(self) -> bool:
        if self.acked:
            return True
        try:
            await asyncio.wait_for(self.ack_changed.wait(), self.ack_timeout_s)
        except TimeoutError:
            await self._report(
                f"result {self.presented} not acknowledged within {self.ack_timeout_s:g} s "
                f"(ResultReady={self.ready}; the PLC must copy it to ResultAck)"
            )
            return False
        if self.error.startswith("result "):
            self.error = ""
            await self.io.write({"HandshakeError": ""})
        return True

    def health(self) -> dict[str, Any]:
        """The handshake's state for the station status."""
        recent = sorted(self.overheads)
        overhead = (
            {
                "n": len(recent),
                "p50": recent[len(recent) // 2],
                "p99": recent[min(len(recent) - 1, int(len(recent) * 0.99))],
            }
            if recent
            else {"n": 0}
        )
        return {
            "overhead_ms": overhead,
            "presented_seq": self.presented,
            "acknowledged": self.acked,
            "busy": bool(self.pending_jobs),
            "overrun": self.overrun,
            "triggers": self.triggers,
            "error": self.error,
        }
