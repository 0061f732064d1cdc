"""The review queue's pages: the next part to judge, a given part, and the verdict submitted.

The page shows the part's picture (its anomaly map on top), why it is in the queue and its
history; its keys submit the form, the verdict goes to the review desk
(:class:`~flawscope.web.reviews.ReviewDesk`), and the browser prefetches the next part's pictures.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from flawscope.errors import InputError
from flawscope.web import queue as review_queue
from flawscope.web.auth import Principal, require
from flawscope.web.errors import PartNotFoundError
from flawscope.web.imaging import mask_from_polygons
from flawscope.web.pages import SeqPath, local_target, picture_fields, render
from flawscope.web.reviews import reviews_of_part
from flawscope.web.state import WebState

router = APIRouter(include_in_schema=False)
Operator = Annotated[Principal, Depends(require("operator"))]
REASONS = {
    "flagged": "flagged by an operator",
    # Not only the score band: a station rule (low category confidence, an unknown-looking part, a
    # defect too small) sends parts too; the page shows the record's reason under "Why".
    "review_band": "the model sent it to review",
    "sample": "random check of a passed part",
}


def _state(request: Request) -> WebState:
    return request.app.state.web


def _review_page(
    request: Request,
    who: Principal,
    seq: int,
    item: review_queue.QueueItem | None,
    left: int,
    coming: review_queue.QueueItem | None = None,
) -> Response:
    state = _state(request)
    # The queue entry carries its inspection record: no second look-up.
    record = item.record if item is not None and item.record.seq == seq else state.record(seq)
    if record is None or record.kind != "inspection":
        raise PartNotFoundError("seq", f"there is no inspection {seq} in the audit log")
    image = state.image_of(record)
    earlier = reviews_of_part(state.db, seq)
    return render(
        request,
        "review.html",
        {
            "principal": who,
            "nav": "review",
            "record": record,
            "item": item,
            "queue_left": left,
            "reason_text": REASONS.get(item.reason, "") if item else "",
            **picture_fields(image),
            "confidence": record.category_confidence or None,  # 0: no category probability
            "categories": state.categories(),
            "history": state.history(record.part_id),
            "request_id": uuid.uuid4().hex,
            "known_review_seq": earlier[-1].seq if earlier else 0,
            "next_url": "/review",
            "queue_total": left,
            # The browser fetches the next part's pictures while this one is looked at.
            "coming": _coming(state, coming),
        },
    )


@router.get("/review")
def review_next(
    request: Request, who: Operator, after: Annotated[int | None, Query(ge=0)] = None
) -> Response:
    """The next part of the queue (``after``: the one that comes after that queue entry)."""
    db = _state(request).db
    with db.read():  # one transaction for the page's questions
        items = review_queue.pending(db, limit=2, after_id=after)
        if not items and after is not None:  # skipped past the end: start again from the top
            items = review_queue.pending(db, limit=2)
        if not items:
            return render(request, "review_empty.html", {"principal": who, "nav": "review"})
        left = sum(review_queue.counts(db).values())
        coming = items[1] if len(items) > 1 else None
        return _review_page(request, who, items[0].record.seq or 0, items[0], left, coming)


def _coming(state: WebState, item: review_queue.QueueItem | None) -> dict[str, Any] | None:
    """The next part's pictures to prefetch (``None``: nothing to fetch)."""
    if item is None or item.record.seq is None:
        return None
    image = state.image_of(item.record)
    if state.prerender is not None:  # drawn by now unless it fell out of the cache
        state.prerender.want([item.record.seq])
    return {"seq": item.record.seq, "has_map": image.has_map} if image.path is not None else None


@router.get("/review/{seq}")
def review_part(request: Request, who: Operator, seq: SeqPath) -> Response:
    """Review a given part (from its page), whether or not it is in the queue."""
    db = _state(request).db
    with db.read():
        left = sum(review_queue.counts(db).values())
        return _review_page(request, who, seq, review_queue.entry_of(db, seq), left)


@router.post("/review/{seq}")
def review_submit(
    request: Request,
    who: Operator,
    seq: SeqPath,
    verdict: Annotated[str, Form()],
    request_id: Annotated[str, Form(max_length=64)],
    known_review_seq: Annotated[int, Form(ge=0)] = 0,
    category: Annotated[str, Form(max_length=40)] = "",
    note: Annotated[str, Form(max_length=500)] = "",
    regions: Annotated[str, Form(max_length=200_000)] = "",
    next: Annotated[str, Form()] = "/review",
) -> Response:
    """Record the verdict and go on to the next part."""
    state = _state(request)
    mask = None
    if regions.strip() and verdict == "defect":
        try:
            polygons = json.loads(regions)
        except json.JSONDecodeError:
            raise InputError("regions", "the drawn regions are not valid JSON") from None
        if polygons:
            record = state.record(seq)
            image = state.image_of(record) if record is not None else None
            if image is not None and image.path is not None:
                mask = mask_from_polygons(polygons, image.width, image.height)
    state.desk.submit(
        seq,
        verdict,
        who.name,
        category=category if verdict == "defect" else None,
        note=note,
        mask=mask,
        request_id=request_id,
        known_review_seq=known_review_seq,
    )
    return RedirectResponse(local_target(next), 303)
