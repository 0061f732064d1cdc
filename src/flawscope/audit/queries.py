"""Reading the audit log: its head, the records in order, counts, the outcome that stands, exports.

:class:`AuditQueries` is the read side of :class:`~flawscope.audit.store.AuditLog` (which adds
opening, the write lock and the appends); a log opened read-only uses only these. Every read is a
short transaction of its own, and records are streamed a page at a time, so a long read neither
holds memory nor blocks the line's writes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from os import PathLike
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from flawscope.audit.chain import GENESIS_HASH, row_to_record
from flawscope.audit.export import export_records
from flawscope.audit.fields import fields_at
from flawscope.audit.schema import inspections
from flawscope.audit.verify import ChainHead, VerifyResult, verify_rows
from flawscope.errors import InputError
from flawscope.types import InspectionRecord, Outcome

logger = logging.getLogger(__name__)

_PAGE = 2000
_T = inspections.c


class AuditQueries:
    """The queries of an audit log on an open engine (a base of :class:`~flawscope.audit.store.AuditLog`).

    Args:
        engine: the database's engine.
        shown_url: its URL without the password, for messages.
        schema_version: the store's schema version (an older store opened read-only has only the
            columns of its version).
    """

    def __init__(self, engine: Engine, shown_url: str, *, schema_version: int) -> None:
        self._engine = engine
        self._schema_version = schema_version
        self._columns = [inspections.c[spec.name] for spec in fields_at(schema_version)]
        self._url = shown_url

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
