"""``flawscope sink replay NAME --from SEQ``: re-send what a sink gave up on.

Replay re-enables a disabled sink, then sends, in ``seq`` order and with their original ids, the
sink's dead letters from ``SEQ`` on (with ``include_delivered``, every record from ``SEQ`` up to the
sink's cursor, for a peer that lost its data). A dead letter the peer acknowledges leaves the dead
letters; one it refuses again stays. Records after the cursor are not touched:
they are the running station's forwarder's to deliver. Replay works whether the station runs or not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flawscope.audit import AuditLog
from flawscope.config import StationConfig
from flawscope.errors import InputError
from flawscope.integrate.cursors import CursorStore
from flawscope.integrate.registry import DeliveryError, RecordRefused, SinkContext, SinkDisabled, make_sink
from flawscope.types import InspectionRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayResult:
    """What a replay did.

    Attributes:
        sent: records the peer acknowledged.
        refused: records refused again (still dead letters).
        remaining_dead_letters: dead letters of the sink after the replay.
        stopped: why the replay stopped before the end (``""`` when it went through).
    """

    sent: int
    refused: int
    remaining_dead_letters: int
    stopped: str = ""


def replay(
    config: StationConfig,
    name: str,
    from_seq: int,
    *,
    include_delivered: bool = False,
    batch: int = 50,
    progress: Callable[[int], object] | None = None,
) -> ReplayResult:
    """Re-send a sink's dead letters (and, optionally, its delivered records) from ``from_seq``.

    Raises:
        InputError: no such sink, or the audit store cannot be opened.
    """
    sink_config = config.sink(name)
    if from_seq < 1:
        raise InputError("--from", f"must be a record seq >= 1, got {from_seq}")
    cursors = CursorStore(config.station.audit, synchronous=config.station.audit_synchronous)
    audit = AuditLog.open(config.station.audit, read_only=True)
    try:
        state = cursors.state(name)
        if state is None:
            raise InputError(name, "this sink never ran: it has no cursor and no dead letters")
        if state.disabled:
            logger.warning("sink %s was disabled (%s); enabling it again", name, state.disabled)
            cursors.enable(name)
        dead = dict(cursors.dead_letters(name, from_seq))
        wanted = set(dead)
        if include_delivered:
            wanted |= set(range(from_seq, state.seq + 1))
        sink = make_sink(SinkContext(config, sink_config, None, config.station.audit))
        sent = refused = 0
        stopped = ""
        try:
            sink.open()
        except DeliveryError as exc:
            return ReplayResult(0, 0, len(cursors.dead_letters(name)), str(exc))
        try:
            pending: list[InspectionRecord] = []
            for record in audit.records(since_seq=from_seq - 1):
                if record.seq is None or record.seq > state.seq:
                    break
                if record.seq in wanted:
                    pending.append(record)
                if len(pending) >= batch:
                    done, bad, stopped = _send(sink, pending, cursors, name, dead)
                    sent, refused, pending = sent + done, refused + bad, []
                    if progress is not None:
                        progress(sent)
                    if stopped:
                        break
            if pending and not stopped:
                done, bad, stopped = _send(sink, pending, cursors, name, dead)
                sent, refused = sent + done, refused + bad
        finally:
            sink.close()
        return ReplayResult(sent, refused, len(cursors.dead_letters(name)), stopped)
    finally:
        audit.close()
        cursors.close()


def _send(
    sink: object, records: list[InspectionRecord], cursors: CursorStore, name: str, dead: dict[int, str]
) -> tuple[int, int, str]:
    """Deliver records one call at a time; returns (acknowledged, refused, why it stopped)."""
    deliver = sink.deliver  # type: ignore[attr-defined]
    sent = refused = 0
    rest = list(records)
    while rest:
        try:
            done = deliver(rest)
        except RecordRefused as exc:
            ok = [r.seq for r in rest if r.seq is not None and r.seq < exc.seq]
            cursors.remove_dead_letters(name, [s for s in ok if s in dead])
            cursors.advance(name, 0, [(exc.seq, exc.reason)])
            sent, refused = sent + len(ok), refused + 1
            rest = [r for r in rest if r.seq is not None and r.seq > exc.seq]
            continue
        except (DeliveryError, SinkDisabled) as exc:
            done = getattr(exc, "delivered", 0)
            acked = [r.seq for r in rest[:done] if r.seq is not None]
            cursors.remove_dead_letters(name, [s for s in acked if s in dead])
            return sent + done, refused, str(exc)
        acked = [r.seq for r in rest[:done] if r.seq is not None]
        cursors.remove_dead_letters(name, [s for s in acked if s in dead])
        sent += done
        if done < len(rest):
            return sent, refused, f"the peer took {done} of {len(rest)} records"
        rest = []
    return sent, refused, ""
