"""Tables of the audit database and how to connect to it (SQLite or PostgreSQL, SQLAlchemy 2 Core).

SQLite connections run in WAL mode with ``synchronous=FULL`` by default and a busy timeout; the
driver's own transaction handling is turned off so that the log can issue ``BEGIN IMMEDIATE`` for
writes (the chain head read and the insert must be atomic across processes).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from flawscope.audit.chain import GENESIS_HASH, HASH_SCHEME
from flawscope.errors import InputError

SCHEMA_VERSION = 1
SYNCHRONOUS_MODES = ("FULL", "NORMAL")
#: Execution option that marks a connection whose transactions write (``BEGIN IMMEDIATE`` on SQLite).
WRITE_OPTION = "flawscope_audit_write"
# Key of the PostgreSQL advisory lock taken while the schema is created (any constant will do).
_PG_SCHEMA_LOCK = 0x666C6177

metadata = sa.MetaData()
# INTEGER (not BIGINT) on SQLite makes seq an alias of the rowid: the table is stored in seq order.
_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

inspections = sa.Table(
    "inspections",
    metadata,
    sa.Column("seq", _BIGINT, primary_key=True, autoincrement=False),
    sa.Column("part_id", sa.Text, nullable=False),
    sa.Column("station", sa.Text, nullable=False),
    sa.Column("acquired_at", sa.Double, nullable=True),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("score", sa.Double, nullable=True),
    sa.Column("normalized_score", sa.Double, nullable=True),
    sa.Column("regions", sa.Text, nullable=False),
    sa.Column("category", sa.Text, nullable=True),
    sa.Column("image_sha256", sa.Text, nullable=False),
    sa.Column("image_uri", sa.Text, nullable=False),
    sa.Column("model_hash", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("threshold_version", sa.BigInteger, nullable=True),
    sa.Column("latency_ms", sa.Double, nullable=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("ref_seq", sa.BigInteger, nullable=True),
    sa.Column("operator", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False),
    sa.Column("record_hash", sa.Text, nullable=False),
    sa.Index("ix_inspections_part_seq", "part_id", "seq"),
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (also when SQLAlchemy cannot parse it)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def describe(exc: BaseException) -> str:
    """A one-line account of a database error, without SQLAlchemy's SQL echo and help links."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("(Back")]
    return " ".join(lines)[:400] or type(exc).__name__


def parse_url(url: str) -> URL:
    """Parse and check an audit database URL.

    A bare ``postgresql://`` URL gets the psycopg (v3) driver, the one flawscope installs.

    Raises:
        InputError: not a URL, not SQLite or PostgreSQL, in-memory SQLite, or a missing directory.
    """
    shown = redact(url)
    try:
        parsed = make_url(url)
    except Exception:
        raise InputError(shown, "cannot open the audit database: not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return parsed
    if backend != "sqlite":
        raise InputError(
            shown, "cannot open the audit database: only sqlite:/// and postgresql:// are supported"
        )
    database = parsed.database or ""
    if database in ("", ":memory:") or "mode=memory" in database or parsed.query.get("mode") == "memory":
        raise InputError(shown, "cannot open the audit database: an in-memory log would be lost; give a file")
    if not parsed.query.get("uri"):
        folder = Path(database).resolve().parent
        if not folder.is_dir():
            raise InputError(shown, f"cannot open the audit database: directory {folder} does not exist")
    return parsed


def create_audit_engine(
    url: URL, *, synchronous: str, busy_timeout_s: float, connect_timeout_s: float, read_only: bool
) -> Engine:
    """A SQLAlchemy engine set up for the audit log (nothing is connected yet).

    Args:
        url: a URL checked by ``parse_url``.
        synchronous: SQLite ``synchronous`` pragma, ``"FULL"`` or ``"NORMAL"``.
        busy_timeout_s: how long a SQLite writer waits for another writer's lock.
        connect_timeout_s: how long to wait for a PostgreSQL server.
        read_only: do not switch a SQLite file to WAL mode (that would write to it).
    """
    if url.get_backend_name() != "sqlite":
        # libpq rounds connect_timeout to whole seconds and treats values below 2 as 2.
        args = {"connect_timeout": max(2, round(connect_timeout_s))}
        return sa.create_engine(url, connect_args=args, pool_pre_ping=True)
    engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s})
    pragmas = [f"PRAGMA synchronous={synchronous}", f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}"]
    if not read_only:
        pragmas.insert(0, "PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, not the driver (it would defer the lock).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def lock_for_write(conn: Connection, timeout_s: float) -> None:
    """Serialise writers: on PostgreSQL lock the table against other writers (readers go on).

    On SQLite the ``BEGIN IMMEDIATE`` of a write connection already holds the database's write lock.

    Args:
        conn: a connection inside a write transaction.
        timeout_s: how long to wait for another writer (PostgreSQL's own default is forever).
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{max(1, round(timeout_s * 1000))}ms'")
        conn.exec_driver_sql("LOCK TABLE inspections IN EXCLUSIVE MODE")


def write_refusal(conn: Connection) -> str:
    """Why this connection could not append (``""`` if it can), asked before the first append.

    Args:
        conn: a connection inside the write transaction that opened the log.

    Raises:
        sqlalchemy.exc.OperationalError: the database refuses writes (a read-only SQLite file).
    """
    # A write that changes nothing: SQLite's BEGIN IMMEDIATE succeeds even on a read-only file.
    conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=meta.c.value))
    if conn.dialect.name != "postgresql":
        return ""
    if not conn.execute(sa.select(sa.func.has_table_privilege("inspections", "INSERT"))).scalar():
        return "this user may not INSERT into table inspections"
    return ""


def init_schema(conn: Connection, shown_url: str, *, read_only: bool) -> None:
    """Create the tables on first use and check the ``meta`` table of an existing log.

    Args:
        conn: a connection inside a write transaction (or any transaction when ``read_only``).
        shown_url: URL for error messages.
        read_only: only check; fail if the log does not exist.

    Raises:
        InputError: not a flawscope audit database, or one of another schema version or hash scheme.
    """
    if conn.dialect.name == "postgresql" and not read_only:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK)))
    inspector = sa.inspect(conn)
    has_meta, has_records = inspector.has_table("meta"), inspector.has_table("inspections")
    if has_records and not has_meta:
        raise InputError(shown_url, "has an 'inspections' table but is not a flawscope audit database")
    if not has_meta:
        if read_only:
            raise InputError(shown_url, "cannot open the audit database: it holds no audit log yet")
        metadata.create_all(conn)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        conn.execute(
            meta.insert(),
            [
                {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                {"key": "genesis_hash", "value": GENESIS_HASH},
                {"key": "hash_scheme", "value": HASH_SCHEME},
                {"key": "created_at", "value": now},
            ],
        )
        return
    stored = {str(k): str(v) for k, v in conn.execute(sa.select(meta.c.key, meta.c.value))}
    if stored.get("schema_version") != str(SCHEMA_VERSION):
        raise InputError(
            shown_url,
            f"audit database has schema version {stored.get('schema_version')!r}; "
            f"this flawscope reads version {SCHEMA_VERSION}",
        )
    if stored.get("genesis_hash") != GENESIS_HASH or stored.get("hash_scheme") != HASH_SCHEME:
        raise InputError(shown_url, "audit database uses another genesis hash or hash scheme")
