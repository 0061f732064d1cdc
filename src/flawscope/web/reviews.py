"""Reviews: a person's verdict on an inspected part, recorded as a new audit record (never an edit).

A review is an audit record of kind ``review`` whose ``ref_seq`` is the inspection it judges and
whose ``operator`` is the reviewer. The verdict maps onto the record's outcome (good: ``pass``,
defect: ``fail``, unsure: ``review``), the defect category onto ``category``, the regions the
reviewer drew onto ``regions``; the rest (note, drawn mask file and its SHA-256, the form's
request id) is a JSON object in ``reason``, inside the hash chain. The mask file is written
completely, under a name of its own, before the record is appended: a crash leaves at most an
unreferenced mask, never a record pointing at a partial file.

Submitting is idempotent: the same request id gives back the review already recorded. A form that
was opened before somebody else reviewed the same part is refused (:class:`ReviewConflictError`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from flawscope.audit import AuditLog
from flawscope.audit.chain import row_to_record
from flawscope.audit.schema import inspections
from flawscope.errors import FlawscopeError, InputError
from flawscope.line.store import safe_name
from flawscope.types import InspectionRecord, Outcome
from flawscope.web.database import WebDB, storable
from flawscope.web.errors import PartNotFoundError
from flawscope.web.imaging import mask_regions, write_png_atomic
from flawscope.web.queue import close_entries

VERDICTS = {"good": Outcome.PASS, "defect": Outcome.FAIL, "unsure": Outcome.REVIEW}
_VERDICT_OF = {outcome.value: verdict for verdict, outcome in VERDICTS.items()}
_CATEGORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_NOTE = 500
_I = inspections.c


class ReviewConflictError(FlawscopeError):
    """The part was reviewed by somebody else after the form was opened."""

    def __init__(self, review: Review) -> None:
        self.review = review
        when = datetime.fromtimestamp(review.reviewed_at, UTC).isoformat(timespec="seconds")
        super().__init__(
            f"inspection {review.ref_seq} was reviewed meanwhile ({review.verdict}) by "
            f"{review.reviewer} at {when}; reload it to see that review before adding another"
        )


@dataclass(frozen=True)
class Review:
    """One review as read back from the audit log.

    Attributes:
        seq: the review record's ``seq``.
        ref_seq: the inspection reviewed.
        part_id: the part.
        verdict: ``good``, ``defect`` or ``unsure``.
        category: the defect category (defects only).
        reviewer: who decided.
        reviewed_at: when, seconds since the epoch.
        note: the reviewer's note.
        mask: path of the drawn mask inside the image store, relative to its root (``""``: none).
        mask_sha256: SHA-256 of the mask file.
        request_id: id of the form that submitted it (for idempotency).
        n_regions: regions the reviewer drew.
        image_uri: the part's stored image.
        image_sha256: its SHA-256.
        station: the station that inspected it.
        source: the camera (source URI).
    """

    seq: int
    ref_seq: int
    part_id: str
    verdict: str
    category: str | None
    reviewer: str
    reviewed_at: float
    note: str
    mask: str
    mask_sha256: str
    request_id: str
    n_regions: int
    image_uri: str
    image_sha256: str
    station: str
    source: str


def review_of(record: InspectionRecord) -> Review:
    """The review held by a ``review`` audit record.

    Raises:
        ValueError: the record is not a review.
    """
    if record.kind != "review" or record.ref_seq is None or record.seq is None:
        raise ValueError(f"record {record.seq} is not a review")
    try:
        details = json.loads(record.reason) if record.reason.startswith("{") else {"note": record.reason}
    except json.JSONDecodeError:
        details = {"note": record.reason}
    return Review(
        seq=record.seq,
        ref_seq=record.ref_seq,
        part_id=record.part_id,
        verdict=_VERDICT_OF.get(record.outcome.value, "unsure"),
        category=record.category,
        reviewer=record.operator,
        reviewed_at=record.acquired_at,
        note=str(details.get("note", "")),
        mask=str(details.get("mask", "")),
        mask_sha256=str(details.get("mask_sha256", "")),
        request_id=str(details.get("request_id", "")),
        n_regions=len(record.regions),
        image_uri=record.image_uri,
        image_sha256=record.image_sha256,
        station=record.station,
        source=record.source,
    )


def check_verdict(verdict: str, category: str | None) -> str | None:
    """The category to record, if the verdict and category are valid together.

    Raises:
        InputError: an unknown verdict, a category on a good or unsure verdict, or a bad category name.
    """
    if verdict not in VERDICTS:
        raise InputError("verdict", f"{verdict!r} is not one of {', '.join(VERDICTS)}")
    category = (category or "").strip() or None
    if category is None:
        return "defect" if verdict == "defect" else None
    if verdict != "defect":
        raise InputError("category", "only a defect has a category")
    if not _CATEGORY.match(category) or category.lower() == "good":
        raise InputError("category", "must be 1-40 letters, digits, spaces, '_', '.' or '-' (and not 'good')")
    return category


def reviews_of_part(db: WebDB, ref_seq: int) -> list[Review]:
    """Every review of inspection ``ref_seq``, oldest first."""
    query = sa.select(inspections).where(_I.ref_seq == ref_seq, _I.kind == "review").order_by(_I.seq)
    with db.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [review_of(row_to_record(r)) for r in rows]


def get_inspection(db: WebDB, seq: int) -> InspectionRecord | None:
    """The inspection record ``seq`` (None when there is none, or it is not an inspection)."""
    with db.read() as conn:
        row = conn.execute(sa.select(inspections).where(_I.seq == seq)).mappings().first()
    if row is None:
        return None
    record = row_to_record(row)
    return record if record.kind == "inspection" else None


class ReviewDesk:
    """Records reviews: checks them, writes the drawn mask, appends the record, closes the queue entry.

    Args:
        audit: the audit log reviews are appended to.
        db: the web app's connection to the same database.
        store_root: the image store (masks go under ``reviews/<date>/``).
    """

    def __init__(self, audit: AuditLog, db: WebDB, store_root: Path) -> None:
        self.audit = audit
        self.db = db
        self.store_root = store_root
        # One submission at a time in this process: the idempotency check and the append must not
        # interleave with a second copy of the same form.
        self._lock = threading.Lock()

    def submit(
        self,
        ref_seq: int,
        verdict: str,
        reviewer: str,
        *,
        category: str | None = None,
        note: str = "",
        mask: np.ndarray | None = None,
        request_id: str | None = None,
        known_review_seq: int | None = None,
    ) -> tuple[Review, bool]:
        """Record one review.

        Args:
            ref_seq: the inspection reviewed.
            verdict: ``good``, ``defect`` or ``unsure``.
            reviewer: the user who decided.
            category: defect category (defects only; ``defect`` when not given).
            note: free text, at most 500 characters.
            mask: ``(H, W)`` uint8 mask the reviewer drew (255 = defective), at the image's size.
            request_id: id of the submitting form; a second submission with it changes nothing.
            known_review_seq: the newest review of the part the form knew of (0: none); a newer
                one by somebody else makes this submission a :class:`ReviewConflictError`.

        Returns:
            ``(the review, True when it was recorded now / False when it already was)``.

        Raises:
            PartNotFoundError: no inspection ``ref_seq``.
            InputError: an invalid verdict, category, note, mask or request id.
            ReviewConflictError: see ``known_review_seq``.
            AuditWriteError: the audit log could not be written (nothing recorded).
        """
        category = check_verdict(verdict, category)
        note = storable(note or "").strip()
        if len(note) > MAX_NOTE:
            raise InputError("note", f"at most {MAX_NOTE} characters")
        if request_id is None:
            request_id = uuid.uuid4().hex
        if not _REQUEST_ID.match(request_id):
            raise InputError("request_id", "must be 8-64 letters, digits, '_' or '-'")
        if mask is not None and verdict != "defect":
            raise InputError("mask", "only a defect has a drawn region")
        with self._lock:
            target = get_inspection(self.db, ref_seq)
            if target is None:
                raise PartNotFoundError("ref_seq", f"there is no inspection {ref_seq} in the audit log")
            earlier = reviews_of_part(self.db, ref_seq)
            for review in earlier:
                if review.request_id == request_id:
                    return review, False
            if known_review_seq is not None:
                newer = [r for r in earlier if r.seq > known_review_seq]
                if newer:
                    raise ReviewConflictError(newer[-1])
            details: dict[str, object] = {"verdict": verdict, "request_id": request_id}
            if note:
                details["note"] = note
            regions: Sequence = ()
            if mask is not None and mask.any():
                relative = self._write_mask(target, mask, request_id)
                data = (self.store_root / relative).read_bytes()
                details["mask"] = relative
                details["mask_sha256"] = hashlib.sha256(data).hexdigest()
                regions = mask_regions(mask)
            record = self.audit.append_review(
                ref_seq,
                VERDICTS[verdict],
                reviewer,
                json.dumps(details, sort_keys=True, ensure_ascii=True),
                category=category,
                regions=regions,
            )
        close_entries(self.db, ref_seq, record.seq or 0)
        return review_of(record), True

    def _write_mask(self, target: InspectionRecord, mask: np.ndarray, request_id: str) -> str:
        if mask.ndim != 2 or mask.dtype != np.uint8:
            raise InputError("mask", f"must be an (H, W) uint8 array, got {mask.shape} {mask.dtype}")
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        name = f"{target.seq}-{safe_name(target.part_id)[:80]}-{request_id[:16]}_mask.png"
        relative = f"reviews/{day}/{name}"
        try:
            write_png_atomic(self.store_root / relative, np.where(mask > 0, 255, 0).astype(np.uint8))
        except OSError as exc:
            raise InputError(self.store_root, f"cannot write the drawn mask ({exc})") from None
        return relative


def list_reviews(
    db: WebDB,
    *,
    verdict: str | None = None,
    reviewer: str | None = None,
    since: float | None = None,
    until: float | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> list[Review]:
    """Reviews, newest first, filtered and paginated in SQL (keyset on ``seq``)."""
    query = sa.select(inspections).where(_I.kind == "review").order_by(_I.seq.desc()).limit(limit)
    if verdict is not None:
        query = query.where(_I.outcome == VERDICTS[verdict].value)
    if reviewer is not None:
        query = query.where(_I.operator == reviewer)
    if since is not None and math.isfinite(since):
        query = query.where(_I.acquired_at >= since)
    if until is not None and math.isfinite(until):
        query = query.where(_I.acquired_at < until)
    if before_seq is not None:
        query = query.where(_I.seq < before_seq)
    with db.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [review_of(row_to_record(r)) for r in rows]


def latest_reviews(db: WebDB, *, page: int = 2000) -> list[Review]:
    """The latest review of every reviewed inspection, in inspection order (for the feedback dataset)."""
    latest: dict[int, Review] = {}
    last = 0
    while True:
        query = sa.select(inspections).where(_I.kind == "review", _I.seq > last).order_by(_I.seq).limit(page)
        with db.read() as conn:
            rows = conn.execute(query).mappings().all()
        for row in rows:
            review = review_of(row_to_record(row))
            latest[review.ref_seq] = review
            last = review.seq
        if len(rows) < page:
            break
    return [latest[k] for k in sorted(latest)]
