"""The FastAPI application: pages for people, a REST API for programs, one event stream for dashboards.

``create_app`` opens the audit database (creating the web tables and read indexes on first use),
loads the optional bundle, and starts the live feed when the app starts. Errors become clear
answers: JSON ``{"detail": ...}`` under ``/api``, a page (or the login page) elsewhere; nothing a
user does produces a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flawscope.audit import AuditLog, AuditWriteError
from flawscope.errors import BundleError, FlawscopeError, InputError
from flawscope.web import admin_pages, api, assets, pages, pictures, review_pages
from flawscope.web import queue as review_queue
from flawscope.web.auth import Denied, audit_denial, identify
from flawscope.web.config import WebConfig
from flawscope.web.database import WebDB
from flawscope.web.errors import ConflictError, DatabaseError, NotFoundError
from flawscope.web.imaging import StorePathError
from flawscope.web.live import Feed, SinkStatus
from flawscope.web.prerender import Prerenderer
from flawscope.web.reviews import ReviewConflictError, ReviewDesk
from flawscope.web.sinks import SinkReader
from flawscope.web.state import WebState, when
from flawscope.web.stats import parse_shifts
from flawscope.web.uploads import NoInspectorError

logger = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
HEAD = 16  # the first queued parts, whose pictures are kept drawn ahead
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class Guard:
    """ASGI middleware: security headers on every answer, and a cap on request bodies.

    A body declared larger than ``max_body`` is answered 413 before it is read; one that grows
    past it while being read is cut off.
    """

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            answer = JSONResponse(
                {"detail": f"the request is larger than the {self.max_body:,} bytes accepted"}, 413
            )
            await answer(scope, receive, send)
            return
        seen = 0
        started = time.perf_counter()

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    return {"type": "http.disconnect"}
            return message

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # How long the app took to answer (the browser's developer tools show it).
                took = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
                message["headers"] = [*message.get("headers", []), *HEADERS, (b"server-timing", took)]
            await send(message)

        await self.app(scope, limited, with_headers)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def _error(request: Request, status: int, message: str, heading: str = "") -> Response:
    if _wants_json(request):
        return JSONResponse({"detail": message}, status)
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(
        request,
        "error.html",
        {"status": status, "heading": heading or f"Error {status}", "message": message, "principal": None},
        status_code=status,
    )


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(Denied)
    async def denied(request: Request, exc: Denied) -> Response:
        principal = getattr(request.state, "principal", None)
        actor = principal.name if principal is not None else "-"
        if actor == "-" and exc.status == 403:
            try:
                found = identify(request)
                actor = found.name if found else "-"
            except Denied:
                pass
        audit_denial(request, exc, actor)
        if exc.status == 401 and not _wants_json(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={target if request.method == 'GET' else '/'}", 303)
        answer = _error(request, exc.status, exc.message, "Not allowed")
        if exc.status == 401:
            answer.headers["www-authenticate"] = "Bearer"
        return answer

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        return _error(request, 404, str(exc), "Not found")

    @app.exception_handler(ConflictError)
    async def taken(request: Request, exc: ConflictError) -> Response:
        return _error(request, 409, str(exc), "Cannot do that")

    @app.exception_handler(NoInspectorError)
    async def no_inspector(request: Request, exc: NoInspectorError) -> Response:
        return _error(request, 503, str(exc), "No model loaded")

    @app.exception_handler(StorePathError)
    async def bad_path(request: Request, exc: StorePathError) -> Response:
        return _error(request, 400, str(exc), "Not in the image store")

    @app.exception_handler(ReviewConflictError)
    async def conflict(request: Request, exc: ReviewConflictError) -> Response:
        return _error(request, 409, str(exc), "Reviewed meanwhile")

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> Response:
        return _error(request, 422, str(exc), "Cannot do that")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        return _error(request, 422, problems or "the request is not valid", "Cannot do that")

    @app.exception_handler(DatabaseError)
    @app.exception_handler(AuditWriteError)
    async def database(request: Request, exc: FlawscopeError) -> Response:
        return _error(request, 503, f"the audit database is not available: {exc}", "Database unavailable")


def _templates(files: assets.Assets) -> Jinja2Templates:
    env = Environment(
        loader=PackageLoader("flawscope.web", "templates"), autoescape=select_autoescape(["html"])
    )
    env.filters["when"] = when
    env.globals["assets"] = files
    return Jinja2Templates(env=env)


def _load_inspector(config: WebConfig) -> tuple[Any, list[dict[str, Any]]]:
    if config.bundle is None:
        return None, []
    from flawscope.runtime import Inspector

    try:
        inspector = Inspector.load(config.bundle, threads=1)
    except BundleError as exc:
        raise InputError(config.bundle, f"cannot load the bundle: {exc}") from None
    return inspector, [t.to_dict() for t in inspector.bundle.thresholds.versions]


def create_app(config: WebConfig, *, sinks: SinkStatus | None = None) -> FastAPI:
    """The web app for an audit database and image store.

    Args:
        config: settings (checked here).
        sinks: where the dashboard reads the sinks' states from (a station passes its forwarders'
            live states); by default the audit database's sink cursors and ``config.status_file``.

    Raises:
        InputError: an unusable setting, database, image store or bundle.
    """
    config = config.checked()
    audit = AuditLog.open(config.audit_url)
    try:
        db = WebDB(config.audit_url)
    except Exception:
        audit.close()
        raise
    inspector, thresholds = _load_inspector(config)
    store_root = config.images.resolve()
    settings = WebState.load_settings(db, config)
    review_ratio = None
    active = getattr(inspector, "thresholds", None)
    if active is not None and active.reject > 0:
        # Drawn on the score trend, where scores are divided by the reject threshold.
        review_ratio = float(active.review) / float(active.reject)
    # Keeps the pictures of the queue's head drawn (``state`` is made below).
    prerender = Prerenderer(
        lambda seq: pictures.prepare(state, seq),
        head=lambda: [i.record.seq or 0 for i in review_queue.pending(db, limit=HEAD)],
    )
    feed = Feed(
        db,
        shifts=parse_shifts(config.shifts),
        sample_rate=settings.sample_rate,
        poll_s=config.poll_s,
        review_threshold=review_ratio,
        sinks=sinks if sinks is not None else SinkReader(db, config.status_file),
        on_queued=lambda _seqs: prerender.top_up(),
    )
    state = WebState(
        config=config,
        db=db,
        audit=audit,
        desk=ReviewDesk(audit, db, store_root),
        feed=feed,
        store_root=store_root,
        settings=settings,
        inspector=inspector,
        thresholds=thresholds,
        prerender=prerender,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        prerender.start()
        feed.start()
        prerender.top_up()  # the parts already waiting when the app starts
        try:
            yield
        finally:
            feed.stop()
            prerender.stop()
            audit.close()
            db.close()

    app = FastAPI(
        title="flawscope",
        version="1",
        description="Inspection records, reviews and statistics of a flawscope station.",
        docs_url=None,  # the interactive docs load scripts from a CDN; the schema is at openapi_url
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.web = state
    app.state.assets = assets.Assets(STATIC)
    app.state.templates = _templates(app.state.assets)
    _install_handlers(app)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.include_router(review_pages.router)
    app.include_router(pictures.router)
    app.include_router(admin_pages.router)
    app.include_router(assets.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # A batch of uploads and the multipart framing around them.
    app.add_middleware(Guard, max_body=config.max_upload_bytes * api.MAX_BATCH + 1_000_000)
    return app
