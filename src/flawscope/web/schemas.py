"""The REST API's request and response bodies (Pydantic models: they make the OpenAPI schema)."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from flawscope.types import InspectionRecord
from flawscope.web.queue import QueueItem
from flawscope.web.reviews import Review

OutcomeName = Literal["pass", "review", "fail", "error", "not_inspected"]
VerdictName = Literal["good", "defect", "unsure"]
#: Largest id accepted: what JSON numbers (JavaScript's doubles) hold exactly.
MAX_ID = 2**53 - 1
#: A defect category: also a folder name in the feedback dataset, so never "good".
CATEGORY = r"^(?![Gg][Oo][Oo][Dd]$)[A-Za-z0-9][A-Za-z0-9 _.-]{0,39}$"
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Point = Annotated[list[Fraction], Field(min_length=2, max_length=2)]
Polygon = Annotated[list[Point], Field(min_length=3, max_length=2000)]


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


class RegionOut(BaseModel):
    """A defect region in image pixels."""

    bbox: list[int] = Field(description="x0, y0, x1, y1 (x1, y1 exclusive)")
    area_px: int
    peak: float | None
    centroid: list[float | None]


class InspectionOut(BaseModel):
    """One audit record (an inspection, override or review)."""

    seq: int
    kind: str
    part_id: str
    station: str
    camera: str = Field(description="the source URI")
    acquired_at: float | None
    outcome: OutcomeName
    score: float | None
    normalized_score: float | None = Field(description="score / reject threshold")
    category: str | None
    category_confidence: float | None = Field(
        default=None, description="probability of the category (a defect's: given that the part is defective)"
    )
    regions: list[RegionOut]
    model_version: str
    threshold_version: int | None
    latency_ms: float | None
    reason: str
    ref_seq: int | None
    operator: str
    has_image: bool
    record_hash: str

    @classmethod
    def of(cls, r: InspectionRecord) -> InspectionOut:
        """From an audit record."""
        return cls(
            seq=r.seq or 0,
            kind=r.kind,
            part_id=r.part_id,
            station=r.station,
            camera=r.source,
            acquired_at=_num(r.acquired_at),
            outcome=r.outcome.value,
            score=_num(r.score),
            normalized_score=_num(r.normalized_score),
            category=r.category,
            category_confidence=r.category_confidence or None,
            regions=[
                RegionOut(
                    bbox=list(g.bbox),
                    area_px=g.area_px,
                    peak=_num(g.peak),
                    centroid=[_num(v) for v in g.centroid],
                )
                for g in r.regions
            ],
            model_version=r.model_version,
            threshold_version=r.threshold_version,
            latency_ms=_num(r.latency_ms),
            reason=r.reason,
            ref_seq=r.ref_seq,
            operator=r.operator,
            has_image=bool(r.image_uri),
            record_hash=r.record_hash,
        )


class ErrorOut(BaseModel):
    """Why a request was refused, in a sentence."""

    detail: str


ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorOut, "description": "no credentials, or a token that is not valid"},
    403: {"model": ErrorOut, "description": "the user's role does not allow it, or a stale form (CSRF)"},
    413: {"model": ErrorOut, "description": "the request body is too large"},
    422: {"model": ErrorOut, "description": "the request is not valid (the message names the field)"},
    503: {"model": ErrorOut, "description": "the audit database is not available"},
}


class Page(BaseModel):
    """A page of results and the cursor of the next one."""

    next_before_seq: int | None = Field(description="pass as before_seq for the next (older) page")


class InspectionPage(Page):
    """A page of audit records, newest first."""

    items: list[InspectionOut]


class ReviewIn(BaseModel):
    """A person's verdict on an inspected part."""

    model_config = ConfigDict(regex_engine="python-re")

    ref_seq: int = Field(ge=1, le=MAX_ID, description="seq of the inspection reviewed")
    verdict: VerdictName
    category: str | None = Field(
        default=None, pattern=CATEGORY, description="defect type; only a defect has one (ignored otherwise)"
    )
    note: str = Field(default="", max_length=500)
    regions: list[Polygon] = Field(
        default_factory=list,
        max_length=50,
        description="drawn defect regions (a defect's only; ignored otherwise): polygons of [x, y] "
        "points as fractions of the image width and height",
    )
    request_id: str | None = Field(
        default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
        description="idempotency key: the same id never records twice",
    )  # fmt: skip
    known_review_seq: int | None = Field(
        default=None,
        ge=0,
        le=MAX_ID,
        description="newest review of the part you saw (0: none); a newer one is a conflict",
    )


class ReviewOut(BaseModel):
    """A recorded review."""

    seq: int
    ref_seq: int
    part_id: str
    verdict: VerdictName
    category: str | None
    reviewer: str
    reviewed_at: float
    note: str
    mask: str = Field(description="drawn mask, relative to the image store ('' if none)")
    mask_sha256: str
    request_id: str
    n_regions: int

    @classmethod
    def of(cls, r: Review) -> ReviewOut:
        """From a review."""
        return cls(
            seq=r.seq,
            ref_seq=r.ref_seq,
            part_id=r.part_id,
            verdict=r.verdict,  # type: ignore[arg-type]
            category=r.category,
            reviewer=r.reviewer,
            reviewed_at=r.reviewed_at,
            note=r.note,
            mask=r.mask,
            mask_sha256=r.mask_sha256,
            request_id=r.request_id,
            n_regions=r.n_regions,
        )


class ReviewPage(Page):
    """A page of reviews, newest first."""

    items: list[ReviewOut]


class QueueItemOut(BaseModel):
    """A part waiting for review."""

    id: int
    reason: Literal["flagged", "review_band", "sample"]
    queued_at: float
    queued_by: str
    note: str
    inspection: InspectionOut

    @classmethod
    def of(cls, item: QueueItem) -> QueueItemOut:
        """From a queue entry."""
        return cls(
            id=item.id,
            reason=item.reason,  # type: ignore[arg-type]
            queued_at=item.queued_at,
            queued_by=item.queued_by,
            note=item.note,
            inspection=InspectionOut.of(item.record),
        )


class QueueOut(BaseModel):
    """The review queue: counts per reason and the first waiting parts."""

    counts: dict[str, int]
    items: list[QueueItemOut]


class FlagIn(BaseModel):
    """Why a part should be looked at."""

    note: str = Field(default="", max_length=500)


class RatesOut(BaseModel):
    """Counts and rates of a set of parts."""

    n: int
    counts: dict[str, int]
    yield_: float | None = Field(alias="yield")
    review_rate: float | None
    reject_rate: float | None

    model_config = {"populate_by_name": True}


class CameraShiftOut(RatesOut):
    """Rates of one camera in one shift."""

    shift: str
    shift_start: float
    camera: str


class StatsOut(BaseModel):
    """Statistics of the inspections in a time range."""

    since: float | None
    until: float | None
    total: RatesOut
    by_camera: dict[str, RatesOut]
    by_shift: list[CameraShiftOut]
    latency_ms: dict[str, float | None] = Field(description="p50, p95, p99 of the latest 20,000 parts")


class VerdictOut(BaseModel):
    """The verdict on an uploaded image, as recorded in the audit log."""

    filename: str
    seq: int | None
    outcome: OutcomeName | None
    score: float | None
    normalized_score: float | None
    category: str | None
    regions: list[RegionOut]
    reason: str
    error: str | None = Field(default=None, description="why this file was not inspected")


class SinkOut(BaseModel):
    """A sink's state, as the station reports it."""

    name: str
    state: str
    backlog: int | None = None
    last_error: str | None = None


RoleName = Literal["operator", "engineer", "admin"]


class UserIn(BaseModel):
    """A new user."""

    username: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    password: str = Field(min_length=8, max_length=1024)
    role: RoleName


class UserChangeIn(BaseModel):
    """Changes to a user (fields left out stay as they are)."""

    role: RoleName | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=8, max_length=1024)


class TokenIn(BaseModel):
    """A new API token."""

    label: str = Field(
        min_length=1,
        max_length=200,
        # One printable character at least: NUL is removed before storing and the label is
        # stripped, so a label of spaces and control characters would be empty.
        pattern=r"[^\s\x00-\x1f\x7f-\x9f]",
        description="what the token is for",
    )


class TokenOut(BaseModel):
    """A new API token: the token itself is shown only here."""

    token_id: str
    token: str


class MeOut(BaseModel):
    """Who the credentials belong to."""

    username: str
    role: str
    via: str
