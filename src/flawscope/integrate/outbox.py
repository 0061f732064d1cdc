"""Store-and-forward from the audit log (a transactional outbox): one forwarder thread per sink.

The line commits a record, then hands it to every forwarder through :meth:`Forwarder.notify`, which
never blocks. Each forwarder delivers the records after its durable cursor, in ``seq`` order, and
moves the cursor only over what its peer acknowledged, so delivery is at least once and ordered; a
record delivered twice (after a crash between the delivery and the cursor write) carries the same
id (:func:`flawscope.integrate.payload.result_id`). The records a forwarder needs next usually come
from memory (the ``notify`` hand-off); after a gap, an outage or a restart they are read back from
the log. A slow or absent peer therefore never slows the line: its records wait in the log, its
backlog grows visibly, and it drains when the peer is back.

Retries wait ``retry_initial_s`` doubling up to ``retry_max_s``, each wait drawn uniformly below
that bound (full jitter). A record the peer refuses for good, a record older than
``give_up_after_s``, and every record of a sink the peer disabled (HTTP 410) go to the dead letters.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flawscope.audit import AuditLog
from flawscope.config import DeliveryConfig
from flawscope.integrate.cursors import CursorStore
from flawscope.integrate.registry import DeliveryError, RecordRefused, Sink, SinkDisabled
from flawscope.types import InspectionRecord

logger = logging.getLogger(__name__)

#: Committed records a forwarder keeps in memory ahead of its cursor; beyond, it reads the log.
MEMORY = 4096


@dataclass(frozen=True)
class SinkStatus:
    """A sink's state, for the live status line and ``flawscope station status``.

    Attributes:
        name: sink name.
        type: sink type.
        state: ``starting``, ``delivering``, ``idle``, ``retrying``, ``disabled`` or ``stopped``.
        connected: the peer is connected now.
        backlog: records committed after the cursor (not yet delivered).
        last_delivered_seq: the cursor.
        delivered: records acknowledged by the peer in this run.
        dead_letters: records in the dead letters (this sink, all runs).
        failures: failed delivery attempts in this run.
        last_error: the latest problem, naming the sink and the peer (``""`` once delivering again).
        details: protocol-specific state (PLC handshake, broker...).
    """

    name: str
    type: str
    state: str
    connected: bool
    backlog: int
    last_delivered_seq: int
    delivered: int = 0
    dead_letters: int = 0
    failures: int = 0
    last_error: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class Forwarder:
    """Delivers the audit log's records to one sink from its durable cursor, in its own thread.

    Args:
        sink: the sink (not yet opened).
        audit: the audit log (read).
        cursors: the cursor tables.
        delivery: retry and cursor settings.
        accept: which records this sink wants (others are passed over); all by default.
    """

    def __init__(
        self,
        sink: Sink,
        audit: AuditLog,
        cursors: CursorStore,
        delivery: DeliveryConfig,
        accept: Callable[[InspectionRecord], bool] | None = None,
    ) -> None:
        self.sink = sink
        self.audit = audit
        self.cursors = cursors
        self.delivery = delivery
        self.accept = accept or (lambda _record: True)
        self._pending: dict[int, InspectionRecord] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.cursor = 0
        self._persisted = 0
        self._persisted_at = 0.0
        self._head = 0
        self._opened = False
        self._tried_open = threading.Event()  # set after the first attempt to open the sink
        self._attempt = 0
        self._state = "starting"
        self._disabled = ""
        self.delivered = 0
        self.failures = 0
        self.dead = 0
        self.last_error = ""

    # ------------------------------------------------------------------------------ interface

    def notify(self, record: InspectionRecord) -> None:
        """Hand over a committed record (called by the line; never blocks)."""
        seq = record.seq
        if seq is None:
            return
        with self._lock:
            if seq > self._head:
                self._head = seq
            if seq > self.cursor and len(self._pending) < MEMORY:
                self._pending[seq] = record
        self._wake.set()

    def start(self) -> None:
        """Read the cursor and start delivering in a background thread.

        Raises:
            InputError: the cursor tables cannot be read.
        """
        head = self.audit.head().seq
        state = self.cursors.start(self.sink.name, head)
        self.cursor = self._persisted = state.seq
        self._head = max(head, state.seq)
        self._disabled = state.disabled
        self.dead = state.dead_letters
        self._persisted_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.sink.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop delivering, write the cursor and close the sink (records left wait in the log)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wait_open(self, timeout_s: float) -> bool:
        """Wait for the first attempt to open the sink; True when it is open."""
        self._tried_open.wait(timeout_s)
        return self._opened

    def drain(self, timeout_s: float) -> bool:
        """Wait until everything committed so far is delivered (or dead-lettered); True if it was."""
        deadline = time.monotonic() + timeout_s
        self._head = max(self._head, self.audit.head().seq)
        while time.monotonic() < deadline:
            if self.cursor >= self._head:
                return True
            time.sleep(0.02)
        return self.cursor >= self._head

    def status(self) -> SinkStatus:
        """The sink's state now (thread-safe)."""
        try:
            details = self.sink.health()
        except Exception as exc:  # a status must never take the station down
            details = {"connected": False, "health_error": str(exc)}
        connected = bool(details.pop("connected", self._opened)) and self._opened
        return SinkStatus(
            name=self.sink.name,
            type=self.sink.type,
            state="disabled" if self._disabled else self._state,
            connected=connected,
            backlog=max(0, self._head - self.cursor),
            last_delivered_seq=self.cursor,
            delivered=self.delivered,
            dead_letters=self.dead,
            failures=self.failures,
            last_error=self._disabled or self.last_error,
            details=details,
        )

    # ------------------------------------------------------------------------------- the loop

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._step()
                except Exception as exc:  # a bug or a database problem: report, wait, go on
                    logger.exception("sink %s: delivery loop failed", self.sink.name)
                    self._failed(f"internal error: {exc}")
        finally:
            self._persist(force=True)
            if self._opened:
                self._close()
            self._state = "stopped"

    def _step(self) -> None:
        if self._disabled:
            self._state = "disabled"
            state = self.cursors.state(self.sink.name)  # 'flawscope sink replay' re-enables it
            if state is not None and not state.disabled:
                logger.warning("sink %s: enabled again", self.sink.name)
                self._disabled = ""
                return
            batch = self._next_batch()
            if batch:
                self._dead_letter(batch, f"sink disabled: {self._disabled}")
            else:
                self._idle()
            return
        if not self._opened:
            try:
                self.sink.open()
            except DeliveryError as exc:
                self._tried_open.set()
                self._failed(str(exc))
                return
            self._opened = True
            self._tried_open.set()
            logger.info("sink %s: connected", self.sink.name)
        batch = self._next_batch()
        if not batch:
            self._state = "idle"
            self._idle()
            return
        if self._expired(batch):
            return
        self._state = "delivering"
        self.sink.backlog = max(0, self._head - self.cursor)
        try:
            done = self.sink.deliver(batch)
        except DeliveryError as exc:
            self._acknowledged(batch[: max(0, min(exc.delivered, len(batch)))])
            self._reset()
            self._failed(str(exc), exc.retry_after_s)
            return
        except RecordRefused as exc:
            delivered = [r for r in batch if r.seq is not None and r.seq < exc.seq]
            self._acknowledged(delivered)
            refused = [r for r in batch if r.seq == exc.seq]
            logger.error("sink %s: %s; moved to the dead letters", self.sink.name, exc)
            self._dead_letter(refused, exc.reason)
            return
        except SinkDisabled as exc:
            self._acknowledged(batch[: max(0, min(exc.delivered, len(batch)))])
            reason = str(exc)
            logger.error("%s; disabled (re-enable with 'flawscope sink replay')", reason)
            self.cursors.disable(self.sink.name, reason)
            self._disabled = reason
            return
        self._acknowledged(batch[: max(0, min(done, len(batch)))])
        if done < len(batch):
            self._failed(
                getattr(self.sink, "last_error", "") or f"the peer took {done} of {len(batch)} records"
            )

    def _next_batch(self) -> list[InspectionRecord]:
        """The next records after the cursor that this sink wants, passing over the others."""
        while not self._stop.is_set():
            before = self.cursor
            wanted = self._read_batch()
            if wanted or self.cursor == before:
                return wanted
        return []

    def _read_batch(self) -> list[InspectionRecord]:
        limit = min(self.delivery.max_batch, self.sink.max_batch or self.delivery.max_batch)
        with self._lock:
            for seq in [s for s in self._pending if s <= self.cursor]:
                del self._pending[seq]
            run: list[InspectionRecord] = []
            seq = self.cursor + 1
            while seq in self._pending and len(run) < limit:
                run.append(self._pending[seq])
                seq += 1
        if not run and self._head > self.cursor:
            # Committed but not in memory (another process's, or missed while the memory was full,
            # or from before a restart): read it back. Nothing known beyond the cursor: no query.
            run = list(self.audit.records(since_seq=self.cursor, limit=limit))
            if run:
                self._head = max(self._head, run[-1].seq or 0)
        wanted = []
        for record in run:
            if self.accept(record):
                wanted.append(record)
            elif not wanted:
                self.cursor = record.seq or self.cursor  # nothing for this sink: pass over it
        return wanted

    def _acknowledged(self, records: Sequence[InspectionRecord]) -> None:
        if records:
            self.cursor = max(self.cursor, records[-1].seq or 0)
            self.delivered += len(records)
            self._attempt = 0
            if self.last_error:
                logger.warning("sink %s: delivering again", self.sink.name)
            self.last_error = ""
        self._persist()

    def _dead_letter(self, records: Sequence[InspectionRecord], reason: str) -> None:
        if not records:
            return
        last = records[-1].seq or self.cursor
        self.cursors.advance(self.sink.name, last, [(r.seq or 0, reason) for r in records])
        self.cursor = self._persisted = max(self.cursor, last)
        self._persisted_at = time.monotonic()
        self.dead += len(records)

    def _expired(self, batch: list[InspectionRecord]) -> bool:
        """Dead-letter the records older than ``give_up_after_s`` at the head of the batch."""
        limit = self.delivery.give_up_after_s
        if limit <= 0:
            return False
        cutoff = time.time() - limit
        old = []
        for record in batch:
            if not record.acquired_at < cutoff:
                break
            old.append(record)
        if not old:
            return False
        reason = f"not delivered within {limit:g} s" + (f" ({self.last_error})" if self.last_error else "")
        logger.error("sink %s: %d records %s; moved to the dead letters", self.sink.name, len(old), reason)
        self._dead_letter(old, reason)
        return True

    def _persist(self, force: bool = False) -> None:
        due = time.monotonic() - self._persisted_at >= self.delivery.cursor_interval_s
        if self.cursor > self._persisted and (force or due):
            try:
                self.cursors.advance(self.sink.name, self.cursor)
            except Exception as exc:  # the cursor is written again next time; records are re-sent at worst
                logger.warning("sink %s: cannot write the cursor (%s)", self.sink.name, exc)
                self._persisted_at = time.monotonic()  # try again in cursor_interval_s, not at once
                return
            self._persisted = self.cursor
            self._persisted_at = time.monotonic()

    def _idle(self) -> None:
        # The cursor is written at most every cursor_interval_s, also between parts: a write here
        # after every part would take the database's write lock from the line's next commit.
        self._persist()
        wait = self.delivery.poll_s
        if self.cursor > self._persisted:
            due = self._persisted_at + self.delivery.cursor_interval_s - time.monotonic()
            wait = min(wait, max(0.0, due))
        self._wake.wait(wait)
        self._wake.clear()
        if not self._pending:
            # Records other processes committed (or that were not handed over) are found here.
            self._head = max(self._head, self.audit.head().seq)

    def _failed(self, message: str, at_least_s: float | None = None) -> None:
        if not message.startswith(f"sink {self.sink.name}:"):
            message = f"sink {self.sink.name}: {message}"
        self.failures += 1
        self._attempt += 1
        self._state = "retrying"
        if message != self.last_error:
            logger.warning("%s; retrying", message)
        self.last_error = message
        bound = min(
            self.delivery.retry_max_s, self.delivery.retry_initial_s * 2 ** min(self._attempt - 1, 30)
        )
        self._persist(force=True)
        wait = random.uniform(0, bound)  # full jitter: peers coming back are not stampeded
        if at_least_s is not None:
            wait = max(wait, at_least_s)  # the peer said when (Retry-After)
        self._stop.wait(wait)

    def _reset(self) -> None:
        """After a failed delivery: reconnect next time, unless the sink keeps its connection."""
        if self.sink.reopen_on_error:
            self._close()

    def _close(self) -> None:
        self._opened = False
        try:
            self.sink.close()
        except Exception:
            logger.exception("sink %s: close failed", self.sink.name)
