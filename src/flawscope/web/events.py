"""The change log of the web app: every change and every refused request, append-only and hash-chained.

Logins, logouts, users and tokens created or changed, settings changed, parts flagged, reviews
recorded, and requests refused (401, 403, a stale form) each get one event. Like the audit log,
each event carries the hash of the one before it, so ``verify_events`` can prove that none was
altered, inserted or removed in between.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from flawscope.audit.chain import GENESIS_HASH
from flawscope.audit.schema import events
from flawscope.web.database import WebDB

_E = events.c
MAX_DETAIL = 2000


@dataclass(frozen=True)
class Event:
    """One entry of the change log.

    Attributes:
        seq: position in the log, from 1.
        at: seconds since the epoch.
        actor: the user who acted, ``"-"`` when nobody was logged in, ``"cli"`` for the command line.
        action: what happened (``login``, ``login_failed``, ``denied``, ``user_created``...).
        target: what it happened to (a user name, a path, an inspection seq).
        detail: more facts, as a JSON object.
        remote: the client's address.
    """

    seq: int
    at: float
    actor: str
    action: str
    target: str
    detail: Mapping[str, Any]
    remote: str


def _hash(prev_hash: str, row: Mapping[Any, Any]) -> str:
    body = {k: row[k] for k in ("seq", "at", "actor", "action", "target", "detail", "remote")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{prev_hash}\n{text}".encode("ascii")).hexdigest()


def record_event(
    db: WebDB,
    action: str,
    *,
    actor: str = "-",
    target: str = "",
    detail: Mapping[str, Any] | None = None,
    remote: str = "",
) -> int:
    """Append one event (its own transaction).

    Returns:
        The event's ``seq``.

    Raises:
        DatabaseError: the database could not be written.
    """
    text = json.dumps(dict(detail or {}), sort_keys=True, ensure_ascii=True, default=str)
    if len(text) > MAX_DETAIL:
        text = json.dumps({"truncated": text[:MAX_DETAIL]}, ensure_ascii=True)
    with db.write("web_events") as conn:
        last = conn.execute(sa.select(_E.seq, _E.event_hash).order_by(_E.seq.desc()).limit(1)).first()
        seq, prev_hash = (1, GENESIS_HASH) if last is None else (int(last[0]) + 1, str(last[1]))
        row = {
            "seq": seq,
            "at": time.time(),
            "actor": actor[:200],
            "action": action,
            "target": target[:500],
            "detail": text,
            "remote": remote[:100],
        }
        conn.execute(events.insert().values(**row, prev_hash=prev_hash, event_hash=_hash(prev_hash, row)))
    return seq


def list_events(
    db: WebDB, *, before_seq: int | None = None, limit: int = 100, action: str | None = None
) -> list[Event]:
    """Events, newest first (keyset pagination by ``seq``)."""
    query = sa.select(events).order_by(_E.seq.desc()).limit(limit)
    if before_seq is not None:
        query = query.where(_E.seq < before_seq)
    if action is not None:
        query = query.where(_E.action == action)
    with db.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        Event(
            seq=int(r["seq"]),
            at=float(r["at"]),
            actor=r["actor"],
            action=r["action"],
            target=r["target"],
            detail=json.loads(r["detail"]),
            remote=r["remote"],
        )
        for r in rows
    ]


def verify_events(db: WebDB) -> tuple[bool, str]:
    """Recompute the chain of the change log.

    Returns:
        ``(True, "")`` when intact, else ``(False, what is wrong)`` naming the first bad event.
    """
    prev_hash, expected = GENESIS_HASH, 1
    last = 0
    while True:
        with db.read() as conn:
            rows = (
                conn.execute(sa.select(events).where(_E.seq > last).order_by(_E.seq).limit(5000))
                .mappings()
                .all()
            )
        for row in rows:
            seq = int(row["seq"])
            if seq != expected:
                return False, f"event {expected} is missing (the next one is {seq})"
            if row["prev_hash"] != prev_hash or _hash(prev_hash, row) != row["event_hash"]:
                return False, f"event {seq} was altered, inserted or removed"
            prev_hash, expected, last = row["event_hash"], expected + 1, seq
        if len(rows) < 5000:
            return True, ""
