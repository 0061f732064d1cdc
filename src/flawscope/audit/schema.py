"""Tables of the audit database and how to connect to it (SQLite or PostgreSQL, SQLAlchemy 2 Core).

SQLite connections run in WAL mode with ``synchronous=FULL`` by default and a busy timeout; the
driver's own transaction handling is turned off so that the log can issue ``BEGIN IMMEDIATE`` for
writes (the chain head read and the insert must be atomic across processes).
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from flawscope.audit.fields import FieldSpec, record_fields
from flawscope.errors import InputError

SYNCHRONOUS_MODES = ("FULL", "NORMAL")
#: Execution option that marks a connection whose transactions write (``BEGIN IMMEDIATE`` on SQLite).
WRITE_OPTION = "flawscope_audit_write"

metadata = sa.MetaData()
# INTEGER (not BIGINT) on SQLite makes seq an alias of the rowid: the table is stored in seq order.
_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TYPES: dict[str, Any] = {
    "text": sa.Text,
    "float": sa.Double,
    "int": sa.BigInteger,
    "bool": sa.Boolean,
    "outcome": sa.Text,
    "regions": sa.Text,
}


def column(spec: FieldSpec) -> sa.Column[Any]:
    """The column of a record field (see :mod:`flawscope.audit.fields` for the type rules).

    A NOT NULL column added by a later schema version gets a server default (its field's default),
    which is what ``ALTER TABLE ... ADD COLUMN`` fills the existing rows with; so does a float
    column with a finite default (its NULL would read back as NaN, not as the default, and the old
    records' hashes would change).
    """
    if spec.name == "seq":
        return sa.Column("seq", _BIGINT, primary_key=True, autoincrement=False)
    default = None
    finite_float = spec.kind == "float" and isinstance(spec.default, float) and math.isfinite(spec.default)
    if spec.since > 1 and (not spec.nullable or finite_float):
        default = sa.false() if spec.kind == "bool" else sa.text(_sql_literal(spec.default))
    return sa.Column(spec.name, _TYPES[spec.kind], nullable=spec.nullable, server_default=default)


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        raise TypeError("booleans use sa.false()")
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


#: Indexes of the ``inspections`` table, with the schema version that added each.
INDEXES: tuple[tuple[int, sa.Index], ...] = (
    (1, sa.Index("ix_inspections_part_seq", "part_id", "seq")),
    (3, sa.Index("ix_inspections_time", "acquired_at")),
    (3, sa.Index("ix_inspections_outcome_time", "outcome", "acquired_at")),
    (3, sa.Index("ix_inspections_station_time", "station", "acquired_at")),
    (3, sa.Index("ix_inspections_source_time", "source", "acquired_at")),
    (3, sa.Index("ix_inspections_ref_seq", "ref_seq")),
)

inspections = sa.Table(
    "inspections", metadata, *(column(spec) for spec in record_fields()), *(ix for _, ix in INDEXES)
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# The delivery state of a station's sinks (schema 4; the records themselves are the outbox, these
# only say how far each sink got, see flawscope.integrate.cursors): per sink, the last seq its peer
# acknowledged and why it is disabled ("" when it is not); and the records it gave up on.
sink_cursors = sa.Table(
    "sink_cursors",
    metadata,
    sa.Column("sink", sa.Text, primary_key=True),
    sa.Column("seq", _BIGINT, nullable=False),
    sa.Column("disabled", sa.Text, nullable=False, server_default=""),
    sa.Column("updated_at", sa.Double, nullable=False),
)
sink_dead_letters = sa.Table(
    "sink_dead_letters",
    metadata,
    sa.Column("sink", sa.Text, primary_key=True),
    sa.Column("seq", _BIGINT, primary_key=True, autoincrement=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.Double, nullable=False),
)
# The web app's tables (schema 5, see flawscope.web): who may do what (users, API tokens, login
# sessions; secrets only as hashes), the hash-chained log of every change made through the app,
# the parts waiting for review (the reviews themselves are records of kind "review"), settings.
users = sa.Table(
    "web_users",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("password_changed_at", sa.Double, nullable=False),
)

tokens = sa.Table(
    "web_tokens",
    metadata,
    sa.Column("token_id", sa.String(16), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
)

sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("session_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double, nullable=True),
)

events = sa.Table(
    "web_events",
    metadata,
    sa.Column("seq", _BIGINT, primary_key=True, autoincrement=False),
    sa.Column("at", sa.Double, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("remote", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("event_hash", sa.String(64), nullable=False),
    sa.Index("ix_web_events_at", "at"),
)

review_queue = sa.Table(
    "review_queue",
    metadata,
    sa.Column("id", _BIGINT, primary_key=True, autoincrement=True),
    sa.Column("ref_seq", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.String(16), nullable=False),
    # Audit head when queued: a review recorded after it (seq > after_seq) takes the part off.
    sa.Column("after_seq", sa.BigInteger, nullable=False),
    sa.Column("queued_at", sa.Double, nullable=False),
    sa.Column("queued_by", sa.Text, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    # The review that took the part off the queue (NULL while it waits).
    sa.Column("done_seq", sa.BigInteger, nullable=True),
    sa.Index("ix_review_queue_ref", "ref_seq"),
    sa.Index("ix_review_queue_open", "done_seq", "id"),
)

settings = sa.Table(
    "web_settings",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
WEB_TABLES = (users, tokens, sessions, events, review_queue, settings)
#: Tables a new store is created with (each migration adds its own to an older store).
TABLES = (inspections, meta, sink_cursors, sink_dead_letters, *WEB_TABLES)


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


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite URL (``None`` for PostgreSQL or a ``file:`` URI database)."""
    if url.get_backend_name() != "sqlite" or url.query.get("uri") or not url.database:
        return None
    return Path(url.database)


def parse_url(url: str, *, must_exist: bool = False) -> URL:
    """Parse and check an audit database URL.

    A bare ``postgresql://`` URL gets the psycopg (v3) driver, the one flawscope installs.

    Args:
        url: the URL.
        must_exist: refuse a SQLite file that does not exist yet (reading, verifying, exporting),
            rather than let SQLite create an empty one.

    Raises:
        InputError: not a URL (a file path is answered with the URL to write), not SQLite or
            PostgreSQL, in-memory SQLite, a missing directory, or (``must_exist``) a missing file.
    """
    shown = redact(url)
    if "://" not in url:
        # A file path where a URL belongs ("/data/audit.db"): say what to write instead.
        raise InputError(
            shown,
            f"not a database URL; for a SQLite file write sqlite:///{url} (an absolute path "
            "gives four slashes), for PostgreSQL postgresql://user@host/db",
        )
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
        path = Path(database).resolve()
        if not path.parent.is_dir():
            raise InputError(shown, f"cannot open the audit database: directory {path.parent} does not exist")
        if must_exist and not path.exists():
            raise InputError(shown, f"no audit database at {path} (nothing was recorded there yet)")
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

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, not the driver (it would defer the lock).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            if not read_only:
                switch_to_wal(cursor, busy_timeout_s)
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def switch_to_wal(cursor: Any, timeout_s: float) -> None:
    """Put a SQLite database in WAL mode, waiting up to ``timeout_s`` for other connections.

    While another connection holds a write lock on a database still in rollback mode (another
    process creating the same new log), SQLite refuses the switch at once with "database is
    locked" and never calls the busy handler, so the wait is done here.

    Args:
        cursor: a cursor of a DB-API ``sqlite3`` connection.
        timeout_s: how long to keep trying before the refusal is raised.

    Raises:
        sqlite3.OperationalError: still locked after ``timeout_s``, or any other SQLite error.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


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
