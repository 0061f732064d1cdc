"""The append-only, hash-chained audit log of inspections (SQLite or PostgreSQL).

Every record says which model (``model_hash``, ``model_version``) and which thresholds
(``threshold_version``) judged which part, and is chained to the one before it by its hash, so that
``verify()`` can prove no record was altered, inserted or removed afterwards. There is no update or
delete: an operator's correction is a new ``"override"`` record pointing at the record it corrects.

Writes are serialised by a lock inside the process and by the database across processes (SQLite
``BEGIN IMMEDIATE``; a PostgreSQL table lock that still lets readers in), so the chain head read and
the insert are atomic. A batch is one transaction: it is in the log entirely or not at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from os import PathLike
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from flawscope.audit.chain import GENESIS_HASH, link, normalize_record, record_to_row, row_to_record
from flawscope.audit.errors import AuditWriteError
from flawscope.audit.export import export_records
from flawscope.audit.fields import fields_at
from flawscope.audit.kinds import check_references, record_about
from flawscope.audit.migrations import init_schema
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
from flawscope.audit.verify import ChainHead, VerifyResult, verify_rows
from flawscope.errors import InputError, on_read_only_file_system
from flawscope.types import InspectionRecord, Outcome, Region

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///flawscope-audit.db"
_PAGE = 2000
_T = inspections.c


class AuditLog:
    """Append-only hash-chained log of ``InspectionRecord``; open it with ``AuditLog.open``.

    Thread-safe; several processes may append to the same database. Use as a context manager or call
    ``close()``.
    """

    def __init__(
        self, engine: Engine, shown_url: str, *, read_only: bool, busy_timeout_s: float, schema_version: int
    ) -> None:
        self._engine = engine
        # An older store opened read-only has only the columns of its version.
        self._schema_version = schema_version
        self._columns = [inspections.c[spec.name] for spec in fields_at(schema_version)]
        self._busy_timeout_s = busy_timeout_s
        self._url = shown_url
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

    def _decode(self, row: Mapping[Any, Any]) -> InspectionRecord:
        try:
            return row_to_record(row, self._schema_version)
        except (ValueError, TypeError, KeyError) as exc:
            problem = f"record {row.get('seq')} cannot be read ({exc}): it was edited outside the log"
            raise InputError(self._url, f"{problem}; run verify()") from None

    @staticmethod
    def _head(conn: Connection) -> ChainHead:
        row = conn.execute(sa.select(_T.seq, _T.record_hash).order_by(_T.seq.desc()).limit(1)).first()
        return ChainHead(0, GENESIS_HASH) if row is None else ChainHead(int(row[0]), str(row[1]))

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

    # ----------------------------------------------------------------------------------- reading

    def head(self) -> ChainHead:
        """``(seq, record_hash)`` of the last record, ``(0, GENESIS_HASH)`` when empty.

        Publish it outside the database (MES, MQTT, shift report) and pass it to ``verify`` later:
        that is what detects records removed from the end of the log.
        """
        with self._engine.connect() as conn:
            return self._head(conn)

    def _rows(self, where: Any = None, since_seq: int | None = None) -> Iterator[Mapping[Any, Any]]:
        """Rows in ``seq`` order, a page per short transaction (bounded memory, no long-held cursor)."""
        last = -1 if since_seq is None else int(since_seq)
        while True:
            query = sa.select(*self._columns).where(_T.seq > last).order_by(_T.seq).limit(_PAGE)
            if where is not None:
                query = query.where(where)
            with self._engine.connect() as conn:
                page = conn.execute(query).mappings().all()
            yield from page
            if len(page) < _PAGE:
                return
            last = int(page[-1]["seq"])

    def verify(self, expected_head: ChainHead | tuple[int, str] | None = None) -> VerifyResult:
        """Recompute every hash in ``seq`` order and check the links, streaming (bounded memory).

        Args:
            expected_head: a head published earlier (see ``head``); the log must still contain it.
                Without it, records removed from the end of the log cannot be detected.

        Returns:
            ``VerifyResult``; on failure ``first_bad_seq`` names the first altered, missing or
            inserted record.
        """
        head = None if expected_head is None else ChainHead(int(expected_head[0]), str(expected_head[1]))
        result = verify_rows(self._rows(), head, self._schema_version)
        if not result.ok:
            logger.warning("audit log %s failed verification: %s", self._url, result.problem)
        return result

    def get(self, seq: int) -> InspectionRecord | None:
        """The record ``seq``, or ``None``."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(*self._columns).where(_T.seq == seq)).mappings().first()
        return None if row is None else self._decode(row)

    def records(
        self, since_seq: int | None = None, limit: int | None = None, part_id: str | None = None
    ) -> Iterator[InspectionRecord]:
        """Records in ``seq`` order, streamed.

        Args:
            since_seq: only records with ``seq`` greater than this (pass the last ``seq`` you saw).
            limit: at most this many records.
            part_id: only the records of this part (inspections and overrides).
        """
        where = None if part_id is None else _T.part_id == part_id
        for n, row in enumerate(self._rows(where, since_seq)):
            if limit is not None and n >= limit:
                return
            yield self._decode(row)

    def count(self) -> int:
        """Number of records (inspections and overrides)."""
        with self._engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(inspections)).scalar_one())

    def counts_by_outcome(self, kind: str | None = "inspection") -> dict[Outcome, int]:
        """Number of records per outcome (every outcome present, zeros included).

        Args:
            kind: count only records of this kind (``"inspection"`` or ``"override"``); ``None``: all.
                Counts are of recorded outcomes, not of outcomes after overrides.
        """
        query = sa.select(_T.outcome, sa.func.count()).group_by(_T.outcome)
        if kind is not None:
            query = query.where(_T.kind == kind)
        counts = dict.fromkeys(Outcome, 0)
        with self._engine.connect() as conn:
            for value, n in conn.execute(query):
                try:
                    counts[Outcome(value)] += int(n)
                except ValueError:
                    logger.warning("audit log %s holds an unknown outcome %r", self._url, value)
        return counts

    def latest_outcome(self, part_id: str) -> Outcome | None:
        """The outcome that stands for a part: that of its latest inspection, or of the latest override of it.

        Returns:
            ``None`` when the part was never inspected.
        """
        latest_inspection = (
            sa.select(_T.seq, _T.outcome)
            .where(_T.part_id == part_id, _T.kind == "inspection")
            .order_by(_T.seq.desc())
            .limit(1)
        )
        with self._engine.connect() as conn:
            inspected = conn.execute(latest_inspection).first()
            if inspected is None:
                return None
            overridden = conn.execute(
                sa.select(_T.outcome)
                .where(_T.part_id == part_id, _T.kind == "override", _T.ref_seq == inspected[0])
                .order_by(_T.seq.desc())
                .limit(1)
            ).first()
        return Outcome((overridden or inspected)[-1])

    def export(self, path: str | PathLike[str], format: str = "csv", since: int | None = None) -> int:
        """Export the records to CSV or Parquet, streaming (see ``flawscope.audit.export``).

        Args:
            path: destination file (replaced atomically when complete).
            format: ``"csv"`` or ``"parquet"``.
            since: only records with ``seq`` greater than this (incremental exports).

        Returns:
            Number of records written.
        """
        return export_records(self.records(since_seq=since), path, format)
