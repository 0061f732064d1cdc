"""The review queue: the parts waiting for a person, and why.

Three reasons put a part in the queue: the model sent it to review (``review_band``), an operator
flagged it (``flagged``), or it is one of the random sample of passed parts that people check to
measure the escape rate (``sample``, chosen from the image hash by
:func:`flawscope.line.records.in_review_sample`, like the line that kept the sample's maps). A
review recorded after a part was queued takes it off; the entry stays, marked with the review.
Flagged parts come first, then the review band, then the sample, oldest first in each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from flawscope.audit.chain import row_to_record
from flawscope.audit.schema import inspections, review_queue
from flawscope.errors import InputError
from flawscope.line.records import in_review_sample
from flawscope.types import InspectionRecord
from flawscope.web.database import WebDB, storable
from flawscope.web.errors import PartNotFoundError

REASONS = ("flagged", "review_band", "sample")
_Q, _I = review_queue.c, inspections.c
_PRIORITY: sa.ColumnElement[int] = sa.case({"flagged": 0, "review_band": 1}, value=_Q.reason, else_=2)
_SAMPLE_DIGITS = 15


@dataclass(frozen=True)
class QueueItem:
    """A part waiting for review.

    Attributes:
        id: the queue entry.
        reason: ``flagged``, ``review_band`` or ``sample``.
        queued_at: seconds since the epoch.
        queued_by: who flagged it (``line`` for the automatic reasons).
        note: the flagger's note.
        record: the inspection record.
    """

    id: int
    reason: str
    queued_at: float
    queued_by: str
    note: str
    record: InspectionRecord


def _pending_query() -> sa.Select:
    return (
        # The entry's own columns are labelled: ``reason`` is also an inspection's column.
        sa.select(
            _Q.id.label("q_id"),
            _Q.reason.label("q_reason"),
            _Q.queued_at.label("q_queued_at"),
            _Q.queued_by.label("q_queued_by"),
            _Q.note.label("q_note"),
            inspections,
        )
        .join(inspections, _I.seq == _Q.ref_seq)
        .where(_Q.done_seq.is_(None))
    )


def _item(row: sa.RowMapping) -> QueueItem:
    return QueueItem(
        id=int(row["q_id"]),
        reason=str(row["q_reason"]),
        queued_at=float(row["q_queued_at"]),
        queued_by=str(row["q_queued_by"]),
        note=str(row["q_note"]),
        record=row_to_record(row),
    )


def pending(
    db: WebDB, *, limit: int = 50, reason: str | None = None, after_id: int | None = None
) -> list[QueueItem]:
    """Parts waiting for review, in the order a reviewer works them.

    A part reviewed without its entry being closed (the app was killed between the two writes) is
    closed here and left out.

    Args:
        db: the database.
        limit: most entries.
        reason: only entries queued for this reason.
        after_id: only the entries a reviewer comes to after entry ``after_id`` (skipping it).
    """
    query = _pending_query().order_by(_PRIORITY, _Q.id).limit(limit)
    if reason is not None:
        query = query.where(_Q.reason == reason)
    with db.read() as conn:
        if after_id is not None:
            found = conn.execute(sa.select(_Q.reason).where(_Q.id == after_id)).first()
            if found is not None:
                rank = {"flagged": 0, "review_band": 1}.get(str(found[0]), 2)
                later = sa.or_(
                    _PRIORITY.in_(range(rank + 1, 3)), sa.and_(_PRIORITY.in_([rank]), _Q.id > after_id)
                )
                query = query.where(later)
        rows = conn.execute(query).mappings().all()
    items = [_item(r) for r in rows]
    stale = _already_reviewed(db, items)
    return [i for i in items if i.record.seq not in stale]


def _already_reviewed(db: WebDB, items: list[QueueItem]) -> set[int]:
    if not items:
        return set()
    seqs = [i.record.seq for i in items if i.record.seq is not None]
    query = (
        sa.select(_I.ref_seq, sa.func.max(_I.seq))
        .where(_I.kind == "review", _I.ref_seq.in_(seqs))
        .group_by(_I.ref_seq)
    )
    with db.read() as conn:
        reviewed = {int(r[0]): int(r[1]) for r in conn.execute(query)}
    if not reviewed:
        return set()
    for ref_seq, review_seq in reviewed.items():
        close_entries(db, ref_seq, review_seq)
    return set(reviewed)


def entry_of(db: WebDB, ref_seq: int) -> QueueItem | None:
    """The open queue entry of inspection ``ref_seq``, if it waits for review."""
    query = _pending_query().where(_Q.ref_seq == ref_seq).order_by(_PRIORITY, _Q.id).limit(1)
    with db.read() as conn:
        row = conn.execute(query).mappings().first()
    return None if row is None else _item(row)


def counts(db: WebDB) -> dict[str, int]:
    """Parts waiting, per reason (every reason present)."""
    query = sa.select(_Q.reason, sa.func.count()).where(_Q.done_seq.is_(None)).group_by(_Q.reason)
    out = dict.fromkeys(REASONS, 0)
    with db.read() as conn:
        for reason, n in conn.execute(query):
            out[str(reason)] = int(n)
    return out


def close_entries(db: WebDB, ref_seq: int, review_seq: int) -> None:
    """Mark the open entries of a part as done by review ``review_seq``."""
    with db.write("review_queue") as conn:
        conn.execute(
            review_queue.update()
            .where(_Q.ref_seq == ref_seq, _Q.done_seq.is_(None), _Q.after_seq < review_seq)
            .values(done_seq=review_seq)
        )


def flag(db: WebDB, ref_seq: int, by: str, note: str = "") -> tuple[QueueItem, bool]:
    """Put a part in the queue because an operator says it needs a look.

    Returns:
        ``(its entry, True when queued now / False when it was already waiting)``.

    Raises:
        InputError: no inspection ``ref_seq``, or a note over 500 characters.
    """
    note = storable(note)
    if len(note) > 500:
        raise InputError("note", "at most 500 characters")
    with db.write("review_queue") as conn:
        target = conn.execute(sa.select(_I.seq, _I.kind).where(_I.seq == ref_seq)).first()
        if target is None or target[1] != "inspection":
            raise PartNotFoundError("ref_seq", f"there is no inspection {ref_seq} in the audit log")
        waiting = (
            conn.execute(_pending_query().where(_Q.ref_seq == ref_seq).order_by(_Q.id).limit(1))
            .mappings()
            .first()
        )
        if waiting is not None:
            return _item(waiting), False
        head = conn.execute(sa.select(sa.func.max(_I.seq))).scalar_one()
        conn.execute(
            review_queue.insert().values(
                ref_seq=ref_seq,
                reason="flagged",
                after_seq=int(head or ref_seq),
                queued_at=time.time(),
                queued_by=by,
                note=note.strip(),
                done_seq=None,
            )
        )
        row = (
            conn.execute(_pending_query().where(_Q.ref_seq == ref_seq).order_by(_Q.id.desc()).limit(1))
            .mappings()
            .one()
        )
    return _item(row), True


def sample_cut(rate: float) -> str | None:
    """The hex prefix below which an image hash is in the sample (SQL's view of ``in_review_sample``)."""
    if rate <= 0:
        return None
    cut = math.ceil(rate * 16**_SAMPLE_DIGITS)
    return "g" if cut >= 16**_SAMPLE_DIGITS else f"{cut:0{_SAMPLE_DIGITS}x}"


def _auto_entries(conn: Connection, rows: Iterable[tuple[int, str, str, str]], rate: float) -> int:
    """Queue the review-band parts and the sampled passes among ``(seq, kind, outcome, sha)`` rows."""
    now, values = time.time(), []
    for seq, kind, outcome, sha in rows:
        if kind != "inspection":
            continue
        if outcome == "review":
            reason = "review_band"
        elif outcome == "pass" and in_review_sample(sha, rate):
            reason = "sample"
        else:
            continue
        values.append(
            {
                "ref_seq": seq,
                "reason": reason,
                "after_seq": seq,
                "queued_at": now,
                "queued_by": "line",
                "note": "",
            }
        )
    if not values:
        return 0
    seqs = [v["ref_seq"] for v in values]
    known = {
        int(r[0])
        for r in conn.execute(
            sa.select(_Q.ref_seq).where(_Q.ref_seq.in_(seqs), _Q.reason.in_(("review_band", "sample")))
        )
    }
    fresh = [v for v in values if v["ref_seq"] not in known]
    if fresh:
        conn.execute(review_queue.insert(), [{**v, "done_seq": None} for v in fresh])
    return len(fresh)


def queued_automatically(
    rows: Iterable[tuple[int, str, str, str]], rate: float
) -> list[tuple[int, str, str, str]]:
    """The rows among ``(seq, kind, outcome, image_sha256)`` that go to the queue: review band, sample."""
    return [
        r
        for r in rows
        if r[1] == "inspection" and (r[2] == "review" or (r[2] == "pass" and in_review_sample(r[3], rate)))
    ]


def enqueue(db: WebDB, rows: Iterable[tuple[int, str, str, str]], rate: float) -> int:
    """Queue the review-band parts and sampled passes among new records (the live feed calls this).

    Args:
        db: the database.
        rows: ``(seq, kind, outcome, image_sha256)`` of records just read from the audit log.
        rate: fraction of passed parts sampled for review.

    Returns:
        How many parts were queued (a part already queued for that reason is not queued again).
    """
    wanted = queued_automatically(rows, rate)
    if not wanted:
        return 0
    with db.write("review_queue") as conn:
        return _auto_entries(conn, wanted, rate)


def catch_up(db: WebDB, rate: float, page: int = 5000) -> int:
    """Queue what arrived while the app was not running: records after the last one queued automatically.

    Returns:
        How many parts were queued.
    """
    with db.read() as conn:
        start = conn.execute(
            sa.select(sa.func.max(_Q.after_seq)).where(_Q.reason.in_(("review_band", "sample")))
        ).scalar_one()
    last, total, cut = int(start or 0), 0, sample_cut(rate)
    wanted = _I.outcome == "review"
    if cut is not None:
        wanted = sa.or_(
            wanted, sa.and_(_I.outcome == "pass", sa.func.substr(_I.image_sha256, 1, _SAMPLE_DIGITS) < cut)
        )
    while True:
        query = (
            sa.select(_I.seq, _I.kind, _I.outcome, _I.image_sha256)
            .where(_I.seq > last, _I.kind == "inspection", wanted)
            .order_by(_I.seq)
            .limit(page)
        )
        with db.read() as conn:
            rows = [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in conn.execute(query)]
        if rows:
            with db.write("review_queue") as conn:
                total += _auto_entries(conn, rows, rate)
            last = rows[-1][0]
        if len(rows) < page:
            return total
