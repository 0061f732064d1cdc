"""Pages for people: log in, the live dashboard and its event stream, parts.

Pages are rendered on the server; the dashboard's numbers and charts are then kept current by one
server-sent event stream (``/events/stream``). The review queue's pages are
:mod:`flawscope.web.review_pages`, the settings' :mod:`flawscope.web.admin_pages`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse

from flawscope.errors import InputError
from flawscope.types import Outcome
from flawscope.web import queue as review_queue
from flawscope.web.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Denied,
    Principal,
    audit_denial,
    client_address,
    identify,
    require,
)
from flawscope.web.errors import PartNotFoundError
from flawscope.web.events import record_event
from flawscope.web.imaging import DISPLAY_SIDE
from flawscope.web.queries import Filters, list_records
from flawscope.web.state import PartImage, WebState
from flawscope.web.users import authenticate, end_session, list_users, same_secret, start_session

router = APIRouter(include_in_schema=False)
SeqPath = Annotated[int, Path(ge=1, le=2**53 - 1)]
Operator = Annotated[Principal, Depends(require("operator"))]
LOGIN_LIMIT, LOGIN_WINDOW_S = 5, 300.0
STREAM_TICK_S = 1.0


def _state(request: Request) -> WebState:
    return request.app.state.web


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """A page, with the user and the review queue's size for the top bar."""
    state = _state(request)
    principal = context.get("principal")
    queue_total = sum(state.feed.queue_counts.values()) if principal is not None else 0
    return request.app.state.templates.TemplateResponse(
        request, name, {"queue_total": queue_total, **context}, status_code=status
    )


def picture_fields(image: PartImage) -> dict[str, Any]:
    """What a part's page shows of its picture: whether there is one (else why not), its size, its map."""
    return {
        "image_ok": image.path is not None,
        "image_problem": image.problem,
        "width": image.width,
        "height": image.height,
        "has_map": image.has_map,
        "full_size": max(image.width, image.height) > DISPLAY_SIDE,
    }


def local_target(target: str) -> str:
    """``target`` if it is a path of this app, else ``/`` (no redirect elsewhere after login)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


# ---------------------------------------------------------------------------------- sessions


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness probe (no data)."""
    return {"status": "ok"}


@router.get("/login")
def login_page(request: Request, next: str = "/", error: str = "") -> Response:
    """The login form (a cookie of its own guards it against forged logins)."""
    token = secrets.token_urlsafe(24)
    no_users = not list_users(_state(request).db)
    page = render(
        request,
        "login.html",
        {
            "principal": None,
            "login_csrf": token,
            "next": local_target(next),
            "error": error,
            "no_users": no_users,
            "audit_url": _state(request).db.url,
        },
    )
    page.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=_state(request).config.secure_cookies
    )
    return page


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the name and password and open a session."""
    state = _state(request)
    remote = client_address(request)
    if not same_secret(csrf_token, request.cookies.get(LOGIN_COOKIE, "")):
        record_event(state.db, "denied", target="/login", detail={"why": "login form CSRF"}, remote=remote)
        return RedirectResponse("/login?error=" + quote("The login form expired; please try again."), 303)
    now = time.time()
    failures = [t for t in state.login_failures.get(username, []) if now - t < LOGIN_WINDOW_S]
    if len(failures) >= LOGIN_LIMIT:
        record_event(
            state.db,
            "login_refused",
            actor=username,
            target="/login",
            detail={"why": "too many failures"},
            remote=remote,
        )
        raise Denied(429, f"too many failed logins for {username}; wait {LOGIN_WINDOW_S / 60:.0f} minutes")
    user = authenticate(state.db, username, password)
    if user is None:
        state.login_failures[username] = [*failures, now]
        record_event(state.db, "login_failed", actor=username, target="/login", remote=remote)
        return RedirectResponse(
            f"/login?next={quote(local_target(next))}&error=" + quote("Wrong user name or password."), 303
        )
    state.login_failures.pop(username, None)
    secret, _ = start_session(state.db, user, state.config.session_hours * 3600)
    record_event(state.db, "login", actor=user.username, target="/login", remote=remote)
    answer = RedirectResponse(local_target(next), 303)
    answer.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(state.config.session_hours * 3600),
        httponly=True,
        secure=state.config.secure_cookies,
        samesite="strict",
    )
    answer.delete_cookie(LOGIN_COOKIE)
    return answer


@router.post("/logout")
def logout(request: Request, who: Operator) -> Response:
    """End the session."""
    state = _state(request)
    end_session(state.db, who.session)
    record_event(state.db, "logout", actor=who.name, target="/logout", remote=client_address(request))
    answer = RedirectResponse("/login", 303)
    answer.delete_cookie(SESSION_COOKIE)
    return answer


# --------------------------------------------------------------------------------- dashboard


@router.get("/")
def dashboard(request: Request, who: Operator) -> Response:
    """The live dashboard."""
    snap, text = _state(request).feed.snapshot_json()
    return render(
        request, "dashboard.html", {"principal": who, "nav": "dashboard", "snap": snap, "snap_json": text}
    )


@router.get("/events/stream")
async def stream(request: Request) -> Response:
    """Server-sent events: an ``update`` (the dashboard's snapshot) when anything changed."""
    principal = identify(request)
    if principal is None:
        # An EventSource cannot follow a redirect to the login page (it would get HTML and the
        # browser would reconnect forever): say so in the stream's own format and end it; the
        # dashboard then opens the login page. The refusal is recorded like any other.
        audit_denial(request, Denied(401, "log in first"))
        login = json.dumps({"login": "/login?next=/"})
        return StreamingResponse(
            iter([f"retry: 60000\nevent: signed-out\ndata: {login}\n\n"]),
            media_type="text/event-stream",
            headers={"cache-control": "no-store"},
        )
    feed = _state(request).feed
    try:
        seen = int(request.headers.get("last-event-id") or request.query_params.get("after") or 0)
    except ValueError:
        seen = 0

    async def events() -> AsyncIterator[str]:
        version, quiet = -1, 0.0
        yield "retry: 2000\n\n"
        while not feed.stopping and not await request.is_disconnected():
            snap, payload = feed.snapshot_json()  # encoded once for every stream
            nonlocal seen
            if snap["version"] != version:
                version = snap["version"]
                seen = snap["head"]
                yield f"id: {seen}\nevent: update\ndata: {payload}\n\n"
                quiet = 0.0
            elif quiet >= 15:
                yield ": still here\n\n"
                quiet = 0.0
            await asyncio.sleep(STREAM_TICK_S)
            quiet += STREAM_TICK_S

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


# ------------------------------------------------------------------------------------- parts


@router.get("/parts/{seq}")
def part_page(request: Request, who: Operator, seq: SeqPath) -> Response:
    """One part: its picture, its record and its history."""
    state = _state(request)
    with state.db.read():
        return _part_page(request, who, state, seq)


def _part_page(request: Request, who: Principal, state: WebState, seq: int) -> Response:
    record = state.record(seq)
    if record is None:
        raise PartNotFoundError("seq", f"there is no record {seq} in the audit log")
    if record.kind != "inspection" and record.ref_seq is not None:
        return RedirectResponse(f"/parts/{record.ref_seq}", 303)
    image = state.image_of(record)
    return render(
        request,
        "part.html",
        {
            "principal": who,
            "nav": "inspections",
            "record": record,
            **picture_fields(image),
            "history": state.history(record.part_id),
            "flash": request.query_params.get("flash", ""),
        },
    )


@router.post("/parts/{seq}/flag")
def flag_part(
    request: Request, who: Operator, seq: SeqPath, note: Annotated[str, Form(max_length=500)] = ""
) -> Response:
    """Put the part in the review queue."""
    state = _state(request)
    _, created = review_queue.flag(state.db, seq, who.name, note)
    if state.prerender is not None:
        state.prerender.want([seq])
    if created:
        record_event(
            state.db,
            "flagged",
            actor=who.name,
            target=str(seq),
            detail={"note": note},
            remote=client_address(request),
        )
    message = "Flagged for review." if created else "It was already waiting for review."
    return RedirectResponse(f"/parts/{seq}?flash={quote(message)}", 303)


@router.get("/inspections")
def parts_list(
    request: Request,
    who: Operator,
    outcome: str = "",
    camera: str = "",
    part_id: str = "",
    before_seq: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """Inspected parts, newest first, with filters."""
    state = _state(request)
    if outcome and outcome not in {o.value for o in Outcome}:
        raise InputError("outcome", f"{outcome!r} is not an outcome")
    filters = Filters(outcomes=(outcome,) if outcome else (), camera=camera or None, part_id=part_id or None)
    rows, after = list_records(state.db, filters, before_seq=before_seq, limit=50)
    next_url = ""
    if after is not None:
        query = urlencode({"outcome": outcome, "camera": camera, "part_id": part_id, "before_seq": after})
        next_url = f"/inspections?{query}"
    return render(
        request,
        "inspections.html",
        {
            "principal": who,
            "nav": "inspections",
            "rows": rows,
            "next_url": next_url,
            "outcomes": [o.value for o in Outcome],
            "cameras": sorted(state.feed.cameras),
            "f": {"outcome": outcome, "camera": camera, "part_id": part_id},
        },
    )
