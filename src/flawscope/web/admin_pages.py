"""Pages that change how the app works: review settings, users, the change log, API tokens.

Every change made here is an event in the change log, with who made it and from where.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from flawscope.errors import InputError
from flawscope.web.auth import Principal, client_address, require
from flawscope.web.events import list_events, record_event, verify_events
from flawscope.web.pages import render
from flawscope.web.reviews import check_verdict
from flawscope.web.state import Settings, WebState
from flawscope.web.users import (
    ROLES,
    create_token,
    create_user,
    list_tokens,
    list_users,
    revoke_token,
    update_user,
)

router = APIRouter(include_in_schema=False)
Operator = Annotated[Principal, Depends(require("operator"))]
Engineer = Annotated[Principal, Depends(require("engineer"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def _state(request: Request) -> WebState:
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


def _back(path: str, message: str) -> Response:
    return RedirectResponse(f"{path}?flash={quote(message)}", 303)


@router.get("/settings")
def settings_page(request: Request, who: Engineer) -> Response:
    """Review settings and the loaded model's thresholds."""
    state = _state(request)
    return render(
        request,
        "settings.html",
        {
            "principal": who,
            "nav": "settings",
            "s": state.settings,
            "shifts": state.config.shifts,
            "thresholds": state.thresholds,
            "flash": request.query_params.get("flash", ""),
        },
    )


@router.post("/settings")
def settings_save(
    request: Request,
    who: Engineer,
    sample_rate: Annotated[str, Form(max_length=20)],
    categories: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Change the sampling rate of passed parts and the defect types offered to reviewers."""
    state = _state(request)
    try:
        rate = float(sample_rate)
    except ValueError:
        raise InputError("sample_rate", f"{sample_rate!r} is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise InputError("sample_rate", f"must be a fraction from 0 to 1, got {rate}")
    names = [c.strip() for c in categories.split(",") if c.strip()]
    for name in names:
        check_verdict("defect", name)
    before = state.settings
    state.save_settings(Settings(rate, names))
    _event(
        request,
        who,
        "settings_changed",
        "review",
        sample_rate=[before.sample_rate, rate],
        categories=[before.categories, names],
    )
    return _back("/settings", "Saved.")


@router.get("/admin/users")
def users_page(request: Request, who: Admin) -> Response:
    """Users and their roles."""
    return render(
        request,
        "users.html",
        {
            "principal": who,
            "nav": "users",
            "users": list_users(_state(request).db),
            "roles": ROLES,
            "flash": request.query_params.get("flash", ""),
        },
    )


@router.post("/admin/users")
def users_add(
    request: Request,
    who: Admin,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    role: Annotated[str, Form(max_length=16)],
) -> Response:
    """Add a user."""
    create_user(_state(request).db, username, password, role, created_by=who.name)
    _event(request, who, "user_created", username, role=role)
    return _back("/admin/users", f"User {username} added.")


@router.post("/admin/users/{username}")
def users_change(
    request: Request,
    who: Admin,
    username: str,
    role: Annotated[str, Form(max_length=16)],
    state: Annotated[str, Form(pattern="^(active|disabled)$")],
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    """Change a user's role, state or password."""
    update_user(
        _state(request).db, username, role=role, disabled=state == "disabled", password=password or None
    )
    _event(request, who, "user_changed", username, role=role, state=state, password_changed=bool(password))
    return _back("/admin/users", f"User {username} saved.")


@router.get("/admin/events")
def events_page(
    request: Request, who: Admin, before_seq: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    """The change log, newest first, with the result of checking its hash chain."""
    db = _state(request).db
    found = list_events(db, before_seq=before_seq, limit=100)
    ok, problem = verify_events(db)
    next_url = f"/admin/events?before_seq={found[-1].seq}" if len(found) == 100 else ""
    return render(
        request,
        "events.html",
        {
            "principal": who,
            "nav": "events",
            "events": found,
            "chain_ok": ok,
            "chain_problem": problem,
            "next_url": next_url,
        },
    )


@router.get("/account")
def account(request: Request, who: Operator) -> Response:
    """Your API tokens."""
    return render(
        request,
        "account.html",
        {
            "principal": who,
            "tokens": list_tokens(_state(request).db, who.name),
            "new_token": "",
            "flash": request.query_params.get("flash", ""),
        },
    )


@router.post("/account/tokens")
def account_token(request: Request, who: Operator, label: Annotated[str, Form(max_length=200)]) -> Response:
    """Issue an API token (shown once)."""
    db = _state(request).db
    secret, info = create_token(db, who.name, label)
    _event(request, who, "token_created", info.token_id, label=label)
    page = render(
        request, "account.html", {"principal": who, "tokens": list_tokens(db, who.name), "new_token": secret}
    )
    page.headers["cache-control"] = "no-store"
    return page


@router.post("/account/tokens/{token_id}/revoke")
def account_revoke(request: Request, who: Operator, token_id: str) -> Response:
    """Revoke one of your tokens."""
    db = _state(request).db
    if token_id not in {t.token_id for t in list_tokens(db, who.name)}:
        raise InputError("token_id", f"you have no token {token_id!r}")
    revoke_token(db, token_id)
    _event(request, who, "token_revoked", token_id)
    return _back("/account", "Token revoked.")
