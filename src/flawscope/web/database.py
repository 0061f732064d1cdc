"""The web app's connection to the audit database: short read and write transactions.

The app reads the inspection records and writes its own tables (users, sessions, tokens, the review
queue, the change log) in the same database as the audit log, so that one backup holds everything.
Writes take the database's write lock at their start (SQLite ``BEGIN IMMEDIATE``; a PostgreSQL
table lock), like the audit log's own, so two writers never interleave.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from flawscope.audit import AuditLog
from flawscope.audit.schema import WRITE_OPTION, create_audit_engine, describe, parse_url, redact
from flawscope.web.errors import DatabaseError

logger = logging.getLogger(__name__)


def storable(text: str) -> str:
    """Free text as every database stores it: NUL removed, unpaired surrogates replaced by U+FFFD."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


class WebDB:
    """An engine on the audit database for the web app's reads and writes.

    Args:
        url: SQLAlchemy URL of the audit database (``sqlite:///...`` or ``postgresql://...``).
        busy_timeout_s: how long a write waits for another writer (the line) to finish.
        prepare: create or migrate the audit database's tables first (a writer's job).

    Raises:
        InputError: the database cannot be opened or prepared.
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 10.0, prepare: bool = True) -> None:
        self.url = redact(url)
        self._busy_timeout_s = busy_timeout_s
        if prepare:
            # Opening the log for writing creates the tables, or migrates an older store (schema 5
            # added the web app's tables); a read-only caller that only reads records skips this.
            AuditLog.open(url, busy_timeout_s=busy_timeout_s).close()
        self.engine: Engine = create_audit_engine(
            parse_url(url),
            synchronous="FULL",
            busy_timeout_s=busy_timeout_s,
            connect_timeout_s=5.0,
            read_only=not prepare,
        )
        self._lock = threading.Lock()
        self._reading = threading.local()  # the read transaction open in each thread, if any

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return str(self.engine.dialect.name)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in a read transaction (WAL readers never wait for the line's writes).

        Reads nested in one thread share the outermost one's connection and transaction: a page
        that asks several questions opens one transaction for all of them, and sees one snapshot.
        """
        shared: Connection | None = getattr(self._reading, "conn", None)
        if shared is not None:
            yield shared
            return
        try:
            with self.engine.connect() as conn, conn.begin():
                self._reading.conn = conn
                try:
                    yield conn
                finally:
                    self._reading.conn = None
        except SQLAlchemyError as exc:
            logger.error("read from %s failed: %s", self.url, describe(exc))
            raise DatabaseError(f"{self.url}: cannot read the audit database: {describe(exc)}") from exc

    @contextmanager
    def write(self, *lock_tables: str) -> Iterator[Connection]:
        """A connection in a write transaction, committed when the block ends without an error.

        Args:
            lock_tables: on PostgreSQL, tables to lock against other writers for the transaction
                (SQLite's write lock covers the whole database).
        """
        with self._lock:
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(**{WRITE_OPTION: True})
                    with conn.begin():
                        if conn.dialect.name == "postgresql":
                            ms = max(1, round(self._busy_timeout_s * 1000))
                            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{ms}ms'")
                            for table in lock_tables:
                                conn.exec_driver_sql(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
                        yield conn
            except SQLAlchemyError as exc:
                logger.error("write to %s failed: %s", self.url, describe(exc))
                raise DatabaseError(
                    f"{self.url}: cannot write to the audit database: {describe(exc)}"
                ) from exc

    def close(self) -> None:
        """Close every connection."""
        self.engine.dispose()
