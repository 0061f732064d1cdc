"""Tables of the web app, in the audit database beside the inspection records (SQLAlchemy Core).

``web_users``, ``web_tokens`` and ``web_sessions`` hold who may do what; ``web_events`` is the
append-only, hash-chained record of every change and every refused request made through the app;
``review_queue`` holds the parts waiting for a person (the reviews themselves are audit records).
Secrets are never stored: passwords as argon2 hashes, session ids and API tokens as SHA-256.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

web_metadata = sa.MetaData()
_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

users = sa.Table(
    "web_users",
    web_metadata,
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
    web_metadata,
    sa.Column("token_id", sa.String(16), primary_key=True),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
)

sessions = sa.Table(
    "web_sessions",
    web_metadata,
    sa.Column("session_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double, nullable=True),
)

events = sa.Table(
    "web_events",
    web_metadata,
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
    web_metadata,
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
    web_metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# Reads the app makes on the inspections table: by time, outcome and camera, and a part's reviews.
AUDIT_INDEXES = (
    ("ix_inspections_acquired_at", ("acquired_at",)),
    ("ix_inspections_outcome_seq", ("outcome", "seq")),
    ("ix_inspections_source_seq", ("source", "seq")),
    ("ix_inspections_ref_seq", ("ref_seq",)),
)


def ensure_web_tables(conn: Connection) -> None:
    """Create the web tables and the read indexes on ``inspections`` where they are missing.

    Args:
        conn: a connection inside a write transaction on an opened audit database.
    """
    web_metadata.create_all(conn, checkfirst=True)
    for name, columns in AUDIT_INDEXES:
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON inspections ({', '.join(columns)})")
