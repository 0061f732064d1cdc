"""Who is asking, and may they: sessions and API tokens, roles, CSRF, and the audit of every refusal.

A request is authenticated by an ``Authorization: Bearer <token>`` header (scripts, the REST API)
or by the session cookie (browsers). A browser's state-changing request must also carry its
session's CSRF token (``X-CSRF-Token`` header or ``csrf_token`` form field): a form from another
site, or from a session that has ended, is refused. Every refusal is a ``denied`` event in the
change log, with the path, the method and the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from flawscope.web.events import record_event
from flawscope.web.users import ROLES, User, find_session, find_token, same_secret

logger = logging.getLogger(__name__)

SESSION_COOKIE = "flawscope_session"
LOGIN_COOKIE = "flawscope_login"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Declares the bearer scheme in the OpenAPI schema; the checking is done by ``identify``.
bearer = HTTPBearer(auto_error=False, description="an API token: 'flawscope users token NAME'")


@dataclass(frozen=True)
class Principal:
    """The user behind a request.

    Attributes:
        user: the user.
        via: ``"session"`` or ``"token"``.
        csrf: the session's CSRF token (``""`` for a token).
        session: the session cookie's value (``""`` for a token).
    """

    user: User
    via: str
    csrf: str = ""
    session: str = ""

    @property
    def name(self) -> str:
        """The user name."""
        return self.user.username


class Denied(Exception):  # noqa: N818  # a refusal, not an error of the app
    """A request refused: 401 (nobody, or a bad token), 403 (role, CSRF) or 429 (too many logins).

    Args:
        status: HTTP status.
        message: what the user should know, in a sentence.
    """

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


def client_address(request: Request) -> str:
    """The peer's address (no proxy headers are trusted)."""
    return request.client.host if request.client else ""


def identify(request: Request) -> Principal | None:
    """The principal of a request, or None when it carries no valid credential.

    Raises:
        Denied: a bearer token that is not valid (401), rather than falling back to the cookie.
    """
    state = request.app.state.web
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise Denied(401, "the Authorization header must be 'Bearer <API token>'")
        user = find_token(state.db, secret.strip())
        if user is None:
            raise Denied(401, "the API token is not valid (unknown, revoked, or its user is disabled)")
        return Principal(user, "token")
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie:
        return None
    info = find_session(state.db, cookie)
    if info is None:
        return None
    return Principal(info.user, "session", info.csrf, cookie)


async def _csrf_token(request: Request) -> str:
    token = request.headers.get(CSRF_HEADER, "")
    if token:
        return token
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()  # Starlette keeps the parsed form for the endpoint
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else ""
    return ""


def audit_denial(request: Request, denied: Denied, actor: str = "-") -> None:
    """Record a refused request in the change log (never fails the response)."""
    try:
        record_event(
            request.app.state.web.db,
            "denied",
            actor=actor,
            target=request.url.path,
            detail={"method": request.method, "status": denied.status, "why": denied.message},
            remote=client_address(request),
        )
    except Exception:
        logger.exception("could not record a refused request")


def require(role: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency that lets through users holding ``role`` (or a higher one).

    Unsafe methods from a browser session must carry the session's CSRF token.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")

    async def dependency(
        request: Request, _declared: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Principal:
        # The session or token look-up reads the database: off the event loop, which keeps
        # serving the live feed and the page's pictures meanwhile.
        principal = await run_in_threadpool(identify, request)
        if principal is None:
            raise Denied(401, "log in first")
        if not principal.user.allows(role):
            raise Denied(403, f"this needs the {role} role; {principal.name} is {principal.user.role}")
        if (
            principal.via == "session"
            and request.method not in SAFE_METHODS
            and not same_secret(await _csrf_token(request), principal.csrf)
        ):
            raise Denied(
                403,
                "this form has expired or did not come from this app (CSRF check); "
                "reload the page and try again",
            )
        request.state.principal = principal
        return principal

    return dependency
