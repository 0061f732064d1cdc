"""Reads of the audit records for the REST API and the pages: filters and pages done in SQL.

Pages are keyset pages on ``seq`` (newest first: ``seq < before_seq``), so a page costs the same
however deep it is. Time filters use the ``acquired_at`` index, outcome and camera filters the
``(outcome, seq)`` and ``(source, seq)`` indexes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from flawscope.audit.chain import row_to_record
from flawscope.audit.schema import inspections
from flawscope.types import InspectionRecord
from flawscope.web.database import WebDB
from flawscope.web.stats import BUCKET_S, OUTCOMES, by_shift, percentiles, rates

_I = inspections.c
LATENCY_SAMPLE = 20_000


@dataclass(frozen=True)
class Filters:
    """Which records to read.

    Attributes:
        kind: ``inspection``, ``override`` or ``review`` (None: all kinds).
        outcomes: only these outcomes (empty: all).
        camera: only this source URI.
        station: only this station.
        part_id: only this part.
        since: ``acquired_at`` at or after (seconds since the epoch).
        until: ``acquired_at`` before.
    """

    kind: str | None = "inspection"
    outcomes: Sequence[str] = ()
    camera: str | None = None
    station: str | None = None
    part_id: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self) -> list[Any]:
        """SQL conditions."""
        out: list[Any] = []
        if self.kind is not None:
            out.append(_I.kind == self.kind)
        if self.outcomes:
            out.append(_I.outcome.in_(list(self.outcomes)))
        if self.camera is not None:
            out.append(_I.source == self.camera)
        if self.station is not None:
            out.append(_I.station == self.station)
        if self.part_id is not None:
            out.append(_I.part_id == self.part_id)
        if self.since is not None and math.isfinite(self.since):
            out.append(_I.acquired_at >= self.since)
        if self.until is not None and math.isfinite(self.until):
            out.append(_I.acquired_at < self.until)
        return out


def list_records(
    db: WebDB, filters: Filters, *, before_seq: int | None = None, limit: int = 50
) -> tuple[list[InspectionRecord], int | None]:
    """A page of records, newest first.

    Returns:
        ``(records, before_seq of the next page or None when this is the last)``.
    """
    query = sa.select(inspections).where(*filters.where()).order_by(_I.seq.desc()).limit(limit + 1)
    if before_seq is not None:
        query = query.where(_I.seq < before_seq)
    with db.read() as conn:
        rows = conn.execute(query).mappings().all()
    records = [row_to_record(r) for r in rows[:limit]]
    more = len(rows) > limit and records
    return records, (records[-1].seq if more else None)


def statistics(db: WebDB, filters: Filters, shifts: Sequence[int]) -> dict[str, Any]:
    """Counts and rates in total, per camera and per camera and shift, and latency percentiles.

    Only inspections count (``filters.kind`` is set to ``inspection``).
    """
    where = Filters(
        kind="inspection",
        outcomes=filters.outcomes,
        camera=filters.camera,
        station=filters.station,
        part_id=filters.part_id,
        since=filters.since,
        until=filters.until,
    ).where()
    bucket = sa.cast(sa.func.floor(_I.acquired_at / BUCKET_S), sa.BigInteger) * BUCKET_S
    grouped = (
        sa.select(_I.source, bucket.label("bucket"), _I.outcome, sa.func.count())
        .where(*where)
        .group_by(_I.source, "bucket", _I.outcome)
    )
    latest = sa.select(_I.latency_ms).where(*where).order_by(_I.seq.desc()).limit(LATENCY_SAMPLE)
    with db.read() as conn:
        rows = conn.execute(grouped).all()
        latencies = [r[0] for r in conn.execute(latest)]
    total = dict.fromkeys(OUTCOMES, 0)
    per_camera: dict[str, dict[str, int]] = {}
    buckets: dict[tuple[str, int], dict[str, int]] = {}
    for camera, start, outcome, n in rows:
        camera, outcome, n = str(camera), str(outcome), int(n)
        total[outcome] = total.get(outcome, 0) + n
        counts = per_camera.setdefault(camera, dict.fromkeys(OUTCOMES, 0))
        counts[outcome] = counts.get(outcome, 0) + n
        if start is not None:
            into = buckets.setdefault((camera, int(start)), dict.fromkeys(OUTCOMES, 0))
            into[outcome] = into.get(outcome, 0) + n
    return {
        "since": filters.since,
        "until": filters.until,
        "total": rates(total).to_dict(),
        "by_camera": {camera: rates(c).to_dict() for camera, c in sorted(per_camera.items())},
        "by_shift": by_shift(buckets, shifts, last=1000),
        "latency_ms": percentiles(v for v in latencies if v is not None),
    }
