"""Where re-inspection results go: one row per (archive, image, model, thresholds), written idempotently.

The table ``reinspections`` lives in the audit database (SQLite or PostgreSQL) beside the hash
chain, as analytics data: re-scoring an archive judges no part on the line, so it is not a new
link of the chain. Its primary key is ``(archive, model_hash, threshold_version, image_key)``
and every write is an insert that ignores a key already there, so a re-run, a retried task or
two drivers on the same archive never double a result: the first result of an image stands.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from flawscope.errors import InputError
from flawscope.reinspect.worker import ChunkResult

logger = logging.getLogger(__name__)

metadata = sa.MetaData()
reinspections = sa.Table(
    "reinspections",
    metadata,
    # Key order: the scope first, so that a scope's results are one range of the primary key.
    sa.Column("archive", sa.Text, primary_key=True),
    sa.Column("model_hash", sa.Text, primary_key=True),
    sa.Column("threshold_version", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("image_key", sa.Text, primary_key=True),
    sa.Column("image_sha256", sa.Text, nullable=False),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("score", sa.Double, nullable=True),
    sa.Column("normalized_score", sa.Double, nullable=True),
    sa.Column("regions", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("job", sa.Text, nullable=False),
    sa.Column("worker", sa.Text, nullable=False),
    sa.Column("scored_at", sa.Double, nullable=False),
)
_T = reinspections.c


@dataclass(frozen=True)
class Scope:
    """Which results a job writes: one archive, scored by one model at one threshold version.

    Attributes:
        archive: the archive's identity (its absolute path, or the URI given).
        model_hash: the bundle's weights hash.
        threshold_version: the thresholds that decided.
        model_version: the bundle's version string.
        job: the job's name (for people; not part of the key).
    """

    archive: str
    model_hash: str
    threshold_version: int
    model_version: str
    job: str


def _describe(exc: BaseException) -> str:
    from flawscope.audit.schema import describe

    return describe(exc)


class ResultStore:
    """The ``reinspections`` table of an audit database; open with :meth:`open`."""

    def __init__(self, engine: Engine, shown: str) -> None:
        self._engine = engine
        self.url = shown

    @classmethod
    def open(cls, url: str) -> ResultStore:
        """Open the database (creating the table if needed).

        Raises:
            InputError: naming the URL, when the database cannot be opened or written.
        """
        from flawscope.audit.schema import parse_url, redact

        shown = redact(url)
        parsed = parse_url(url)
        try:
            args = {"timeout": 30} if parsed.get_backend_name() == "sqlite" else {"connect_timeout": 5}
            engine = sa.create_engine(parsed, connect_args=args)
            if parsed.get_backend_name() == "sqlite":
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            metadata.create_all(engine)
        except SQLAlchemyError as exc:
            raise InputError(shown, f"cannot open the results database: {_describe(exc)}") from None
        return cls(engine, shown)

    def close(self) -> None:
        """Release the connections."""
        self._engine.dispose()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _insert(self) -> Any:
        if self._engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(reinspections).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(reinspections).on_conflict_do_nothing()

    def write(self, scope: Scope, results: Sequence[ChunkResult]) -> int:
        """Store results; a key already stored is left as it is.

        Returns:
            How many rows were new.

        Raises:
            InputError: when the database cannot be written.
        """
        if not results:
            return 0
        now = time.time()
        rows = [
            {
                "archive": scope.archive,
                "image_key": r.key,
                "model_hash": scope.model_hash,
                "threshold_version": scope.threshold_version,
                "image_sha256": r.image_sha256,
                "outcome": r.outcome,
                "score": None if math.isnan(r.score) else r.score,
                "normalized_score": None if math.isnan(r.normalized_score) else r.normalized_score,
                "regions": r.regions,
                "reason": r.reason,
                "model_version": scope.model_version,
                "job": scope.job,
                "worker": r.worker,
                "scored_at": now,
            }
            for r in results
        ]
        try:
            with self._engine.begin() as conn:
                # One multi-row statement; RETURNING lists the rows that were new.
                return len(conn.execute(self._insert().returning(_T.image_key), rows).all())
        except SQLAlchemyError as exc:
            raise InputError(self.url, f"cannot write re-inspection results: {_describe(exc)}") from None

    @staticmethod
    def _count(conn: Any, scope: Scope) -> int:
        query = sa.select(sa.func.count()).where(*_scope(scope))
        return int(conn.execute(query).scalar_one())

    def done(self, scope: Scope, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` already have a result in this scope (one query per call)."""
        if not keys:
            return set()
        query = sa.select(_T.image_key).where(*_scope(scope), _T.image_key.in_(list(keys)))
        with self._engine.connect() as conn:
            return {str(row[0]) for row in conn.execute(query)}

    def count(self, scope: Scope) -> int:
        """Results stored in this scope."""
        with self._engine.connect() as conn:
            return self._count(conn, scope)

    def outcomes(self, scope: Scope) -> dict[str, int]:
        """Number of results per outcome in this scope."""
        query = sa.select(_T.outcome, sa.func.count()).where(*_scope(scope)).group_by(_T.outcome)
        with self._engine.connect() as conn:
            return {str(outcome): int(n) for outcome, n in conn.execute(query)}

    def results(self, scope: Scope) -> Iterator[dict[str, Any]]:
        """Every result of the scope, by image key."""
        query = sa.select(reinspections).where(*_scope(scope)).order_by(_T.image_key)
        with self._engine.connect() as conn:
            for row in conn.execute(query).mappings():
                yield dict(row)


def _scope(scope: Scope) -> Iterable[Any]:
    return (
        _T.archive == scope.archive,
        _T.model_hash == scope.model_hash,
        _T.threshold_version == scope.threshold_version,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
