"""The append-only, hash-chained audit log of inspections (SQLite or PostgreSQL).

Every record says which model (``model_hash``, ``model_version``) and which thresholds
(``threshold_version``) judged which part, and is chained to the one before it by its hash, so that
``verify()`` can prove no record was altered, inserted or removed afterwards. There is no update or
delete: an operator's correction is a new ``"override"`` record pointing at the record it corrects.

Writes are serialised by a lock inside the process and by the database across processes (SQLite
``BEGIN IMMEDIATE``; a PostgreSQL table lock that still lets readers in), so the chain head read and
the insert are atomic. A batch is one transaction: it is in the log entirely or not at all.

This module opens the log and writes it; reading it is :mod:`flawscope.audit.queries`, the schema
and its migrations :mod:`flawscope.audit.schema` and :mod:`flawscope.audit.migrations`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from flawscope.audit.chain import link, normalize_record, record_to_row
from flawscope.audit.errors import AuditWriteError
from flawscope.audit.kinds import check_references, record_about
from flawscope.audit.migrations import init_schema
from flawscope.audit.queries import AuditQueries
from flawscope.audit.schema import (
    SYNCHRONOUS_MODES,
    WRITE_OPTION,
    create_audit_engine,
    describe,
    inspections,
    lock_for_write,
    parse_url,
    redact,
    sqlite_path,
    write_refusal,
)
from flawscope.errors import InputError, on_read_only_file_system
from flawscope.types import InspectionRecord, Outcome, Region

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///flawscope-audit.db"
_T = inspections.c


class AuditLog(AuditQueries):
    """Append-only hash-chained log of ``InspectionRecord``; open it with ``AuditLog.open``.

    Thread-safe; several processes may append to the same database. Use as a context manager or call
    ``close()``. Its reading methods (``head``, ``verify``, ``records``, counts, ``export``) are those
    of :class:`~flawscope.audit.queries.AuditQueries`.
    """

    def __init__(
        self, engine: Engine, shown_url: str, *, read_only: bool, busy_timeout_s: float, schema_version: int
    ) -> None:
        super().__init__(engine, shown_url, schema_version=schema_version)
        self._busy_timeout_s = busy_timeout_s
        self._read_only = read_only
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        url: str = DEFAULT_URL,
        *,
        synchronous: str = "FULL",
        busy_timeout_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        read_only: bool = False,
    ) -> AuditLog:
        """Open (and on first use create) an audit log.

        Args:
            url: SQLAlchemy URL: ``sqlite:///path.db`` or ``postgresql+psycopg://user:pw@host/db``.
            synchronous: SQLite only. ``"FULL"`` (default) fsyncs every commit, so a record reported
                to the line survives a power cut. ``"NORMAL"`` skips that fsync (WAL is synced at
                checkpoints only): faster, still never corrupt, and a killed process loses nothing,
                but a power cut or OS crash can lose the last committed batches, which ``verify()``
                then cannot notice without a published head.
            busy_timeout_s: how long a writer waits for another process's write lock (SQLite busy
                timeout, PostgreSQL lock timeout).
            connect_timeout_s: how long to wait for a database server (rounded, at least 2 s).
            read_only: open an existing log for verifying, querying and exporting only.

        Raises:
            InputError: the database cannot be reached, opened or written, or is not an audit log.
        """
        shown = redact(url)
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise InputError("synchronous", f"{synchronous!r} is not one of {', '.join(SYNCHRONOUS_MODES)}")
        parsed = parse_url(url, must_exist=read_only)
        engine: Engine | None = None
        try:
            engine = create_audit_engine(
                parsed,
                synchronous=mode,
                busy_timeout_s=busy_timeout_s,
                connect_timeout_s=connect_timeout_s,
                read_only=read_only,
            )
            with engine.connect() as conn:
                if not read_only:
                    conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    version = init_schema(conn, shown, read_only=read_only)
                    # Fail now, not at the first append, when the database cannot be written.
                    refusal = "" if read_only else write_refusal(conn)
            if refusal:
                raise InputError(shown, f"cannot open the audit database: {refusal}")
        except InputError:
            if engine is not None:
                engine.dispose()
            raise
        except (SQLAlchemyError, ImportError, OSError) as exc:
            if engine is not None:
                engine.dispose()
            problem = describe(exc)
            path = sqlite_path(parsed)
            if path is not None and not read_only and on_read_only_file_system(path):
                # SQLite says "unable to open database file" or "readonly database"; say why.
                problem = f"{path.parent} is on a read-only file system ({problem})"
            raise InputError(shown, f"cannot open the audit database: {problem}") from None
        logger.info("audit log %s opened%s", shown, " read-only" if read_only else "")
        return cls(engine, shown, read_only=read_only, busy_timeout_s=busy_timeout_s, schema_version=version)

    @property
    def url(self) -> str:
        """The database URL, without its password."""
        return self._url

    def close(self) -> None:
        """Close every connection; the log cannot be appended to afterwards."""
        self._closed = True
        self._engine.dispose()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----------------------------------------------------------------------------------- writing

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        if self._closed or self._read_only:
            raise AuditWriteError(self._url, "the audit log is closed or was opened read-only")
        with self._lock:
            try:
                with self._engine.connect() as conn:
                    conn.execution_options(**{WRITE_OPTION: True})
                    with conn.begin():
                        lock_for_write(conn, self._busy_timeout_s)
                        yield conn
            except SQLAlchemyError as exc:
                logger.error("audit write to %s failed: %s", self._url, describe(exc))
                raise AuditWriteError(
                    self._url, f"could not write to the audit log: {describe(exc)}"
                ) from exc

    def _insert(self, conn: Connection, records: Sequence[InspectionRecord]) -> list[InspectionRecord]:
        seq, prev_hash = self._head(conn)
        linked = []
        for record in records:
            seq += 1
            placed = link(record, seq, prev_hash)
            linked.append(placed)
            prev_hash = placed.record_hash
        conn.execute(inspections.insert(), [record_to_row(r) for r in linked])
        return linked

    def append(self, record: InspectionRecord) -> InspectionRecord:
        """Append one record (its ``seq``/``prev_hash``/``record_hash`` are ignored).

        Returns:
            The record as stored, with ``seq``, ``prev_hash`` and ``record_hash`` set; it is durable
            when this returns.

        Raises:
            InputError: a field is invalid, or the record breaks its kind's rules.
            AuditWriteError: the database could not be written; nothing was appended.
        """
        return self.append_many([record])[0]

    def append_many(self, records: Iterable[InspectionRecord]) -> list[InspectionRecord]:
        """Append a batch of records of any kind in one transaction (all of them or none).

        A record about another one (``ref_seq``: an override, a review) must point at an existing
        record of a kind it may be about (:mod:`flawscope.audit.kinds`), checked in the transaction.

        Returns:
            The records as stored, in order, with consecutive ``seq``.

        Raises:
            InputError: a field of a record is invalid or it breaks its kind's rules; nothing was
                appended.
            AuditWriteError: the database could not be written; nothing was appended.
        """
        batch = [normalize_record(r) for r in records]
        if not batch:
            return []
        with self._write() as conn:
            self._check_references(conn, batch)
            return self._insert(conn, batch)

    def _check_references(self, conn: Connection, batch: Sequence[InspectionRecord]) -> None:
        wanted = {r.ref_seq for r in batch if r.ref_seq is not None}
        if not wanted:
            return
        rows = conn.execute(sa.select(_T.seq, _T.kind).where(_T.seq.in_(wanted)))
        stored = {int(seq): str(kind) for seq, kind in rows}
        check_references(batch, stored, self._head(conn).seq + 1, self._url)

    def _append_about(
        self, kind: str, ref_seq: int, outcome: Outcome | str, at: float | None, **fields: Any
    ) -> InspectionRecord:
        if isinstance(ref_seq, bool) or not isinstance(ref_seq, int):
            raise InputError("ref_seq", f"must be an integer, got {ref_seq!r}")
        with self._write() as conn:
            row = conn.execute(sa.select(*self._columns).where(_T.seq == ref_seq)).mappings().first()
            if row is None:
                raise InputError("ref_seq", f"there is no record {ref_seq} in the audit log {self._url}")
            target = self._decode(row)
            when = time.time() if at is None else at
            record = normalize_record(record_about(target, kind, outcome, at=when, **fields))
            return self._insert(conn, [record])[0]

    def append_override(
        self, ref_seq: int, outcome: Outcome | str, operator: str, reason: str, *, at: float | None = None
    ) -> InspectionRecord:
        """Record an operator's decision that replaces the outcome of inspection record ``ref_seq``.

        The override copies the part, station, image and source of the record it overrides; its
        ``acquired_at`` is the time of the decision and it names no model (a person decided).

        Args:
            ref_seq: ``seq`` of the inspection record overridden.
            outcome: the outcome the operator decided.
            operator: who decided (required).
            reason: why (required).
            at: time of the decision, seconds since the epoch; now by default.

        Returns:
            The override record as stored.

        Raises:
            InputError: no inspection record ``ref_seq``, or an empty operator or reason.
            AuditWriteError: the database could not be written.
        """
        return self._append_about("override", ref_seq, outcome, at, operator=operator, reason=reason)

    def append_review(
        self,
        ref_seq: int,
        outcome: Outcome | str,
        operator: str,
        reason: str = "",
        *,
        category: str | None = None,
        regions: Sequence[Region] = (),
        at: float | None = None,
    ) -> InspectionRecord:
        """Record a person's judgement of inspection record ``ref_seq`` (the review queue's verdicts).

        A review does not replace the line's outcome (that is an override): it labels the part, for
        the escape and false-reject rates and the feedback dataset. It copies the part, station,
        image and source of the inspection, and names no model.

        Args:
            ref_seq: ``seq`` of the inspection record reviewed.
            outcome: ``pass`` (the part is good), ``fail`` (defective) or ``review`` (unsure).
            operator: who reviewed (required).
            reason: the review's details.
            category: the defect category, for a defective part.
            regions: the regions the reviewer drew, in image pixels.
            at: time of the review, seconds since the epoch; now by default.

        Returns:
            The review record as stored.

        Raises:
            InputError: no inspection record ``ref_seq``, an empty operator, or another outcome.
            AuditWriteError: the database could not be written.
        """
        fields = {"operator": operator, "reason": reason, "category": category, "regions": tuple(regions)}
        return self._append_about("review", ref_seq, outcome, at, **fields)
