"""Durable delivery state of the sinks, kept in the audit database beside the records.

Two tables of the audit store's schema (:mod:`flawscope.audit.schema`, added by migration 4):

- ``sink_cursors``: per sink, the ``seq`` of the last record its peer acknowledged (everything up to
  it is delivered or dead-lettered), and why the sink is disabled, if it is (``""`` otherwise);
- ``sink_dead_letters``: per sink, records it gave up on, with the reason; ``flawscope sink replay``
  re-sends them and removes those the peer then acknowledges.

The records themselves are never copied: the audit log is the outbox, these tables only say how far
each sink got. Writes take the database's write lock (SQLite ``BEGIN IMMEDIATE``), so several
processes (a running station, ``flawscope sink replay``) can share them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from flawscope.audit.schema import (
    WRITE_OPTION,
    create_audit_engine,
    describe,
    parse_url,
    redact,
    sink_cursors,
    sink_dead_letters,
)
from flawscope.errors import InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CursorState:
    """Where one sink stands.

    Attributes:
        seq: last record acknowledged (or dead-lettered).
        disabled: why the sink stopped for good (``""`` when it delivers).
        dead_letters: records waiting in the dead letters.
        updated_at: when the cursor was last written (seconds since the epoch).
    """

    seq: int
    disabled: str = ""
    dead_letters: int = 0
    updated_at: float = 0.0


class CursorStore:
    """The ``sink_cursors`` and ``sink_dead_letters`` tables of one audit database.

    Args:
        url: the audit database URL (the same as the audit log's).
        synchronous: SQLite ``synchronous`` mode (as the audit log's).

    Raises:
        InputError: the database cannot be opened, or has no sink tables (a store written before
            schema 4 that no station has opened since; opening it with the audit log migrates it).
    """

    def __init__(self, url: str, *, synchronous: str = "FULL", busy_timeout_s: float = 10.0) -> None:
        self.url = redact(url)
        self._engine: Engine = create_audit_engine(
            parse_url(url),
            synchronous=synchronous,
            busy_timeout_s=busy_timeout_s,
            connect_timeout_s=5.0,
            read_only=False,
        )
        try:
            with self._engine.connect() as conn:
                present = sa.inspect(conn).has_table("sink_cursors")
        except SQLAlchemyError as exc:
            self._engine.dispose()
            raise InputError(self.url, f"cannot open the audit database: {describe(exc)}") from None
        if not present:
            self._engine.dispose()
            raise InputError(
                self.url,
                "has no sink tables yet (audit schema < 4): open it with a station or 'flawscope inspect'",
            )

    def close(self) -> None:
        """Release the connections."""
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    # --------------------------------------------------------------------------------- reading

    def state(self, sink: str) -> CursorState | None:
        """The sink's cursor, or None when it never ran."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(sink_cursors).where(sink_cursors.c.sink == sink)).mappings().first()
            if row is None:
                return None
            count = conn.execute(
                sa.select(sa.func.count())
                .select_from(sink_dead_letters)
                .where(sink_dead_letters.c.sink == sink)
            ).scalar_one()
        return CursorState(int(row["seq"]), str(row["disabled"]), int(count), float(row["updated_at"]))

    def dead_letters(self, sink: str, from_seq: int = 0, limit: int | None = None) -> list[tuple[int, str]]:
        """``(seq, reason)`` of the sink's dead letters from ``from_seq`` on, in order."""
        query = (
            sa.select(sink_dead_letters.c.seq, sink_dead_letters.c.reason)
            .where(sink_dead_letters.c.sink == sink, sink_dead_letters.c.seq >= from_seq)
            .order_by(sink_dead_letters.c.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as conn:
            return [(int(seq), str(reason)) for seq, reason in conn.execute(query)]

    # --------------------------------------------------------------------------------- writing

    def start(self, sink: str, head: int) -> CursorState:
        """The sink's state, creating its cursor at ``head`` when it is new.

        A new sink starts at the log's current head: it delivers what is committed from now on
        (``flawscope sink replay NAME --from SEQ --all`` sends older records).
        """
        with self._write() as conn:
            row = conn.execute(sa.select(sink_cursors.c.seq).where(sink_cursors.c.sink == sink)).first()
            if row is None:
                conn.execute(
                    sink_cursors.insert().values(sink=sink, seq=head, disabled="", updated_at=time.time())
                )
        state = self.state(sink)
        assert state is not None
        return state

    def advance(self, sink: str, seq: int, dead: Sequence[tuple[int, str]] = ()) -> None:
        """Move the cursor to ``seq`` (never backwards), dead-lettering ``dead`` in the same transaction."""
        now = time.time()
        with self._write() as conn:
            if dead:
                existing = {
                    int(s)
                    for (s,) in conn.execute(
                        sa.select(sink_dead_letters.c.seq).where(
                            sink_dead_letters.c.sink == sink,
                            sink_dead_letters.c.seq.in_([s for s, _ in dead]),
                        )
                    )
                }
                rows = [
                    {"sink": sink, "seq": s, "reason": r[:2000], "at": now}
                    for s, r in dead
                    if s not in existing
                ]
                if rows:
                    conn.execute(sink_dead_letters.insert(), rows)
            conn.execute(
                sink_cursors.update()
                .where(sink_cursors.c.sink == sink, sink_cursors.c.seq < seq)
                .values(seq=seq, updated_at=now)
            )

    def rewind(self, sink: str, seq: int) -> None:
        """Set the cursor back to ``seq`` (``replay --all``: re-deliver everything after it)."""
        with self._write() as conn:
            conn.execute(
                sink_cursors.update()
                .where(sink_cursors.c.sink == sink)
                .values(seq=seq, updated_at=time.time())
            )

    def disable(self, sink: str, reason: str) -> None:
        """Mark the sink stopped for good (its new records go to the dead letters)."""
        with self._write() as conn:
            conn.execute(
                sink_cursors.update().where(sink_cursors.c.sink == sink).values(disabled=reason or "disabled")
            )

    def enable(self, sink: str) -> None:
        """Let a disabled sink deliver again."""
        with self._write() as conn:
            conn.execute(sink_cursors.update().where(sink_cursors.c.sink == sink).values(disabled=""))

    def remove_dead_letters(self, sink: str, seqs: Sequence[int]) -> None:
        """Forget dead letters that were delivered after all."""
        if not seqs:
            return
        with self._write() as conn:
            conn.execute(
                sink_dead_letters.delete().where(
                    sink_dead_letters.c.sink == sink, sink_dead_letters.c.seq.in_(list(seqs))
                )
            )
