"""The REST API (``/api/v1``): inspections, reviews, the review queue, statistics, uploads, users.

Authenticate with ``Authorization: Bearer <token>`` (``flawscope users token NAME``, or the
account page). The schema is at ``/api/openapi.json``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, Request, Response, UploadFile

from flawscope.errors import InputError
from flawscope.web import queue as review_queue
from flawscope.web.auth import Principal, client_address, require
from flawscope.web.errors import NotFoundError, PartNotFoundError
from flawscope.web.events import list_events, record_event
from flawscope.web.imaging import mask_from_polygons
from flawscope.web.queries import Filters, list_records, statistics
from flawscope.web.reviews import list_reviews, reviews_of_part
from flawscope.web.schemas import (
    ERRORS,
    MAX_ID,
    ErrorOut,
    FlagIn,
    InspectionOut,
    InspectionPage,
    MeOut,
    OutcomeName,
    QueueItemOut,
    QueueOut,
    ReviewIn,
    ReviewOut,
    ReviewPage,
    SinkOut,
    StatsOut,
    TokenIn,
    TokenOut,
    UserChangeIn,
    UserIn,
    VerdictName,
    VerdictOut,
)
from flawscope.web.stats import parse_shifts
from flawscope.web.uploads import clean_name, inspect_uploads
from flawscope.web.users import (
    ROLES,
    create_token,
    create_user,
    list_tokens,
    list_users,
    revoke_token,
    update_user,
)

router = APIRouter(prefix="/api/v1", tags=["flawscope"], responses=ERRORS)
MAX_BATCH = 16
Operator = Annotated[Principal, Depends(require("operator"))]
Engineer = Annotated[Principal, Depends(require("engineer"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Limit = Annotated[int, Query(ge=1, le=500, description="most items in the page")]
BeforeSeq = Annotated[
    int | None, Query(ge=1, le=MAX_ID, description="only items with seq below this (next page)")
]
Seq = Annotated[int, Path(ge=1, le=MAX_ID, description="seq of an audit record")]
Since = Annotated[float | None, Query(description="acquired at or after (seconds since the epoch)")]
Until = Annotated[float | None, Query(description="acquired before (seconds since the epoch)")]


def _state(request: Request):
    return request.app.state.web


def _event(request: Request, who: Principal, action: str, target: str, **detail: object) -> None:
    record_event(
        _state(request).db,
        action,
        actor=who.name,
        target=target,
        detail=detail,
        remote=client_address(request),
    )


@router.get("/me")
def me(who: Operator) -> MeOut:
    """Who the credentials belong to."""
    return MeOut(username=who.name, role=who.user.role, via=who.via)


@router.get("/inspections")
def inspections(
    request: Request,
    who: Operator,
    outcome: Annotated[list[OutcomeName] | None, Query()] = None,
    kind: Annotated[str, Query(pattern="^(inspection|override|review)$")] = "inspection",
    camera: Annotated[str | None, Query(max_length=2000)] = None,
    station: Annotated[str | None, Query(max_length=500)] = None,
    part_id: Annotated[str | None, Query(max_length=500)] = None,
    since: Since = None,
    until: Until = None,
    before_seq: BeforeSeq = None,
    limit: Limit = 50,
) -> InspectionPage:
    """Audit records, newest first, filtered and paginated in SQL."""
    filters = Filters(kind, tuple(outcome or ()), camera, station, part_id, since, until)
    records, after = list_records(_state(request).db, filters, before_seq=before_seq, limit=limit)
    return InspectionPage(items=[InspectionOut.of(r) for r in records], next_before_seq=after)


@router.get("/inspections/{seq}", responses={404: {"model": ErrorOut, "description": "no such record"}})
def inspection(request: Request, who: Operator, seq: Seq) -> InspectionOut:
    """One audit record."""
    record = _state(request).record(seq)
    if record is None:
        raise PartNotFoundError("seq", f"there is no record {seq} in the audit log")
    return InspectionOut.of(record)


@router.get("/inspections/{seq}/reviews")
def inspection_reviews(request: Request, who: Operator, seq: Seq) -> list[ReviewOut]:
    """Every review of one inspection, oldest first."""
    return [ReviewOut.of(r) for r in reviews_of_part(_state(request).db, seq)]


@router.post(
    "/inspections/{seq}/flag",
    status_code=201,
    responses={200: {"model": QueueItemOut, "description": "already waiting"}, 404: {"model": ErrorOut}},
)
def flag(request: Request, response: Response, who: Operator, seq: Seq, body: FlagIn) -> QueueItemOut:
    """Put a part in the review queue (201; 200 when it was already waiting)."""
    item, created = review_queue.flag(_state(request).db, seq, who.name, body.note)
    prerender = _state(request).prerender
    if prerender is not None:
        prerender.want([seq])
    if created:
        _event(request, who, "flagged", str(seq), note=body.note)
    else:
        response.status_code = 200
    return QueueItemOut.of(item)


@router.get("/reviews")
def reviews(
    request: Request,
    who: Operator,
    verdict: VerdictName | None = None,
    reviewer: Annotated[str | None, Query(max_length=64)] = None,
    since: Since = None,
    until: Until = None,
    before_seq: BeforeSeq = None,
    limit: Limit = 50,
) -> ReviewPage:
    """Reviews, newest first, filtered and paginated in SQL."""
    found = list_reviews(
        _state(request).db,
        verdict=verdict,
        reviewer=reviewer,
        since=since,
        until=until,
        before_seq=before_seq,
        limit=limit + 1,
    )
    more = len(found) > limit
    found = found[:limit]
    return ReviewPage(items=[ReviewOut.of(r) for r in found], next_before_seq=found[-1].seq if more else None)


@router.post(
    "/reviews",
    status_code=201,
    responses={
        200: {"model": ReviewOut, "description": "already recorded (same request_id)"},
        404: {"model": ErrorOut, "description": "no such inspection"},
        409: {"model": ErrorOut, "description": "reviewed by somebody else meanwhile"},
    },
)
def post_review(request: Request, response: Response, who: Operator, body: ReviewIn) -> ReviewOut:
    """Record a review (201); the same ``request_id`` again returns the recorded one (200)."""
    state = _state(request)
    mask = None
    if body.regions and body.verdict == "defect":
        record = state.record(body.ref_seq)
        if record is None or record.kind != "inspection":
            raise PartNotFoundError("ref_seq", f"there is no inspection {body.ref_seq} in the audit log")
        image = state.image_of(record)
        if image.path is None:
            raise InputError("regions", f"cannot draw on this part: {image.problem}")
        mask = mask_from_polygons(body.regions, image.width, image.height)
    review, created = state.desk.submit(
        body.ref_seq,
        body.verdict,
        who.name,
        category=body.category if body.verdict == "defect" else None,
        note=body.note,
        mask=mask,
        request_id=body.request_id,
        known_review_seq=body.known_review_seq,
    )
    if not created:
        response.status_code = 200
    return ReviewOut.of(review)


@router.get("/queue")
def queue(
    request: Request,
    who: Operator,
    reason: Annotated[str | None, Query(pattern="^(flagged|review_band|sample)$")] = None,
    limit: Limit = 50,
) -> QueueOut:
    """The parts waiting for review, in the order a reviewer works them."""
    db = _state(request).db
    items = review_queue.pending(db, limit=limit, reason=reason)
    return QueueOut(counts=review_queue.counts(db), items=[QueueItemOut.of(i) for i in items])


@router.get("/stats")
def stats(
    request: Request,
    who: Operator,
    camera: Annotated[str | None, Query(max_length=2000)] = None,
    station: Annotated[str | None, Query(max_length=500)] = None,
    since: Since = None,
    until: Until = None,
) -> StatsOut:
    """Counts, yield, review and reject rates in total, per camera and per camera and shift."""
    state = _state(request)
    filters = Filters(camera=camera, station=station, since=since, until=until)
    return StatsOut.model_validate(statistics(state.db, filters, parse_shifts(state.config.shifts)))


@router.get("/sinks")
def sinks(request: Request, who: Operator) -> list[SinkOut]:
    """The station's sinks and their backlogs (empty when the app runs without a station)."""
    source = _state(request).feed.sinks
    return [SinkOut.model_validate(s) for s in (source() if source is not None else [])]


def _verdicts(
    request: Request, who: Principal, files: list[UploadFile], part_ids: list[str]
) -> list[VerdictOut]:
    if len(files) > MAX_BATCH:
        raise InputError("files", f"at most {MAX_BATCH} images per request, got {len(files)}")
    limit = _state(request).config.max_upload_bytes
    loaded = [(clean_name(f.filename), f.file.read(limit + 1)) for f in files]
    results = inspect_uploads(_state(request), loaded, who.name, part_ids)
    out = []
    for result in results:
        if result.record is None:
            out.append(VerdictOut(filename=result.filename, seq=None, outcome=None, score=None,
                                  normalized_score=None, category=None, regions=[], reason="",
                                  error=result.error))  # fmt: skip
            continue
        record = InspectionOut.of(result.record)
        out.append(
            VerdictOut(
                filename=result.filename,
                seq=record.seq,
                outcome=record.outcome,
                score=record.score,
                normalized_score=record.normalized_score,
                category=record.category,
                regions=record.regions,
                reason=record.reason,
            )
        )
    return out


@router.post("/inspect")
def inspect(
    request: Request,
    who: Operator,
    file: Annotated[UploadFile, File(description="PNG, JPEG, BMP or TIFF")],
    part_id: Annotated[str, Form(max_length=150)] = "",
) -> VerdictOut:
    """Inspect one image with the loaded bundle; the verdict is recorded in the audit log first."""
    result = _verdicts(request, who, [file], [part_id])[0]
    if result.error:
        raise InputError(result.filename, result.error.split(": ", 1)[-1])
    return result


@router.post("/inspect/batch")
def inspect_batch(
    request: Request,
    who: Operator,
    files: Annotated[list[UploadFile], File(min_length=1, max_length=MAX_BATCH, description="the images")],
) -> list[VerdictOut]:
    """Inspect several images; a file that is not a usable image gets its ``error`` and no record."""
    return _verdicts(request, who, files, [])


@router.get("/users")
def users(request: Request, who: Admin) -> list[MeOut]:
    """Every user and role (admins only)."""
    return [
        MeOut(username=u.username, role=u.role if not u.disabled else "disabled", via="")
        for u in list_users(_state(request).db)
    ]


@router.post("/users", status_code=201, responses={409: {"model": ErrorOut, "description": "name taken"}})
def add_user(request: Request, who: Admin, body: UserIn) -> MeOut:
    """Add a user (admins only)."""
    user = create_user(_state(request).db, body.username, body.password, body.role, created_by=who.name)
    _event(request, who, "user_created", body.username, role=body.role)
    return MeOut(username=user.username, role=user.role, via="")


@router.patch("/users/{username}", responses={404: {"model": ErrorOut, "description": "no such user"}})
def change_user(
    request: Request, who: Admin, username: Annotated[str, Path(max_length=64)], body: UserChangeIn
) -> MeOut:
    """Change a user's role, state or password (admins only)."""
    user = update_user(
        _state(request).db, username, role=body.role, disabled=body.disabled, password=body.password
    )
    _event(
        request,
        who,
        "user_changed",
        username,
        role=body.role,
        disabled=body.disabled,
        password_changed=body.password is not None,
    )
    return MeOut(username=user.username, role=user.role if not user.disabled else "disabled", via="")


@router.get("/events")
def events(
    request: Request, who: Admin, before_seq: BeforeSeq = None, limit: Limit = 100
) -> list[dict[str, object]]:
    """The change log, newest first (admins only)."""
    return [e.__dict__ for e in list_events(_state(request).db, before_seq=before_seq, limit=limit)]


@router.post("/tokens", status_code=201)
def new_token(request: Request, who: Operator, body: TokenIn) -> TokenOut:
    """Issue an API token for yourself; the token is shown only in this answer."""
    secret, info = create_token(_state(request).db, who.name, body.label)
    _event(request, who, "token_created", info.token_id, label=info.label)
    return TokenOut(token_id=info.token_id, token=secret)


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    responses={404: {"model": ErrorOut, "description": "no such token"}},
)
def delete_token(request: Request, who: Operator, token_id: str) -> Response:
    """Revoke one of your tokens (admins: anybody's)."""
    db = _state(request).db
    owned = {t.token_id for t in list_tokens(db, None if who.user.allows("admin") else who.name)}
    if token_id not in owned:
        raise NotFoundError("token_id", f"you have no token {token_id!r}")
    revoke_token(db, token_id)
    _event(request, who, "token_revoked", token_id)
    return Response(status_code=204)


__all__ = ["MAX_BATCH", "ROLES", "router"]
