"""Creating the audit database, and upgrading one written by an older flawscope (numbered migrations).

The ``meta`` table's ``schema_version`` says which migrations a store has had. Opening a store for
writing applies the missing ones, in order, in the same transaction that checks the schema (all or
nothing; PostgreSQL and SQLite both run DDL inside transactions), under the lock that serialises
writers. Opening an older store read-only changes nothing: its records are read with the columns it
has, and fields added later take their defaults (which is also what the migration would write).

A new store is created directly at the latest version, from the same declarations (the record's
fields and :data:`~flawscope.audit.schema.INDEXES`), so a migrated store and a new one have the same
columns and indexes.

To change the schema: declare the field (``name: type = added(N, default)`` in
:class:`flawscope.types.InspectionRecord`) or index (``INDEXES``) and append ``Migration(N, ...)``
below. Record hashes are unaffected (see :mod:`flawscope.audit.chain`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flawscope.audit.chain import GENESIS_HASH, HASH_SCHEME, HASH_SCHEMES
from flawscope.audit.fields import record_fields
from flawscope.audit.schema import (
    INDEXES,
    TABLES,
    WEB_TABLES,
    column,
    meta,
    metadata,
    sink_cursors,
    sink_dead_letters,
)
from flawscope.errors import InputError

logger = logging.getLogger(__name__)
# Key of the PostgreSQL advisory lock taken while the schema is created or migrated (any constant).
_PG_SCHEMA_LOCK = 0x666C6177


@dataclass(frozen=True)
class Migration:
    """One numbered step of the audit schema.

    Attributes:
        version: the schema version it produces (the previous one plus one).
        doc: what it changes, for the log.
        apply: runs the step on a connection inside the migrating transaction.
    """

    version: int
    doc: str
    apply: Callable[[Connection], None]


def add_fields(version: int) -> Callable[[Connection], None]:
    """A step adding the columns of every record field declared ``added(version, ...)``."""

    def step(conn: Connection) -> None:
        for spec in record_fields():
            if spec.since == version:
                ddl = sa.schema.CreateColumn(column(spec)).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE inspections ADD COLUMN {ddl}")

    return step


def add_indexes(version: int) -> Callable[[Connection], None]:
    """A step creating every index of :data:`~flawscope.audit.schema.INDEXES` added by ``version``."""

    def step(conn: Connection) -> None:
        for since, index in INDEXES:
            if since == version:
                index.create(conn)

    return step


def _hash_scheme_v2(conn: Connection) -> None:
    conn.execute(meta.update().where(meta.c.key == "hash_scheme").values(value=HASH_SCHEME))


def _chain(*steps: Callable[[Connection], None]) -> Callable[[Connection], None]:
    def step(conn: Connection) -> None:
        for one in steps:
            one(conn)

    return step


#: Every migration, in order; the schema of a new store is the last one's version.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "records name the threshold values and graph that judged (threshold_sha256, graph_sha256), "
        "the bundle's verified signer and --allow-unsigned; hash scheme v2",
        _chain(add_fields(2), _hash_scheme_v2),
    ),
    Migration(3, "indexes on time, outcome, station, source and ref_seq", add_indexes(3)),
    Migration(
        4,
        "delivery state of the station's sinks: sink_cursors, sink_dead_letters",
        lambda conn: metadata.create_all(conn, tables=[sink_cursors, sink_dead_letters]),
    ),
    Migration(
        5,
        "the web app: users, API tokens, sessions, its change log, the review queue, settings",
        lambda conn: metadata.create_all(conn, tables=list(WEB_TABLES)),
    ),
    Migration(
        6,
        "line-scan webs: records carry the roll and web coordinates (web_roll, web_along_m, "
        "web_across_mm, web_length_mm, web_width_mm)",
        add_fields(6),
    ),
    Migration(7, "records carry the probability of their category (category_confidence)", add_fields(7)),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def _check_sequence() -> None:
    numbers = [m.version for m in MIGRATIONS]
    if numbers != list(range(2, 2 + len(numbers))):
        raise RuntimeError(f"audit migrations must be numbered 2, 3, ... without gaps, got {numbers}")


def init_schema(conn: Connection, shown_url: str, *, read_only: bool) -> int:
    """Create the tables on first use, or check (and, writing, migrate) an existing log.

    Args:
        conn: a connection inside a write transaction (or any transaction when ``read_only``).
        shown_url: URL for error messages.
        read_only: only check; fail if the log does not exist; never migrate.

    Returns:
        The store's schema version after this call (older than :data:`SCHEMA_VERSION` only when
        ``read_only``).

    Raises:
        InputError: not a flawscope audit database, one newer than this flawscope, or another
            genesis hash or hash scheme.
    """
    _check_sequence()
    if conn.dialect.name == "postgresql" and not read_only:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_SCHEMA_LOCK)))
    inspector = sa.inspect(conn)
    has_meta, has_records = inspector.has_table("meta"), inspector.has_table("inspections")
    if has_records and not has_meta:
        raise InputError(shown_url, "has an 'inspections' table but is not a flawscope audit database")
    if not has_meta:
        if read_only:
            raise InputError(shown_url, "cannot open the audit database: it holds no audit log yet")
        metadata.create_all(conn, tables=list(TABLES))
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
        return SCHEMA_VERSION
    stored = {str(k): str(v) for k, v in conn.execute(sa.select(meta.c.key, meta.c.value))}
    raw = stored.get("schema_version", "")
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(shown_url, f"audit database has an unreadable schema version {raw!r}")
    version = int(raw)
    if version > SCHEMA_VERSION:
        raise InputError(
            shown_url,
            f"audit database has schema version {version}, newer than this flawscope reads "
            f"({SCHEMA_VERSION}); upgrade flawscope",
        )
    if stored.get("genesis_hash") != GENESIS_HASH or stored.get("hash_scheme") not in HASH_SCHEMES:
        raise InputError(shown_url, "audit database uses another genesis hash or hash scheme")
    if read_only or version == SCHEMA_VERSION:
        return version
    for migration in MIGRATIONS:
        if migration.version > version:
            logger.warning(
                "audit database %s: migrating schema %d -> %d (%s)",
                shown_url,
                migration.version - 1,
                migration.version,
                migration.doc,
            )
            migration.apply(conn)
    conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))
    return SCHEMA_VERSION
