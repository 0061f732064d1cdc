"""``flawscope serve`` (the web app) and ``flawscope users ...`` (who may use it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flawscope.cli.audit import DEFAULT_AUDIT
from flawscope.cli.common import console, err_console
from flawscope.cli.render import kv_table
from flawscope.errors import FlawscopeError

users_app = typer.Typer(help="Users, roles and API tokens of the web app.", no_args_is_help=True)
AuditOption = Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database.")]


def serve_command(
    audit: AuditOption = DEFAULT_AUDIT,
    images: Annotated[Path, typer.Option(help="The line's image store (its --store-images folder).")] = Path(
        "images"
    ),
    host: Annotated[
        str, typer.Option(help="Address to listen on (127.0.0.1: this computer only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    bundle: Annotated[
        Path | None, typer.Option(help="Deployable bundle: lets the API inspect uploads, draws thresholds.")
    ] = None,
    review_sample: Annotated[
        float, typer.Option(help="Fraction of passed parts queued for review (same as the line's).")
    ] = 0.0,
    shifts: Annotated[str, typer.Option(help="Local shift start times.")] = "06:00,14:00,22:00",
    categories: Annotated[str, typer.Option(help="Defect types offered to reviewers, comma separated.")] = "",
    station_status: Annotated[
        Path | None, typer.Option(help="The running station's status file (live sink states).")
    ] = None,
    insecure_cookies: Annotated[
        bool, typer.Option(help="Send the session cookie over plain HTTP (trusted networks without TLS).")
    ] = False,
    nice: Annotated[int, typer.Option(help="Serve pages this many nice levels below the caller (0-19).")] = 0,
) -> None:
    """Serve the dashboard, the review queue and the REST API of an audit database and image store."""
    from flawscope.web import WebConfig, serve

    config = WebConfig(
        audit_url=audit,
        images=images,
        host=host,
        port=port,
        bundle=bundle,
        sample_rate=review_sample,
        shifts=shifts,
        categories=tuple(c.strip() for c in categories.split(",") if c.strip()),
        secure_cookies=not insecure_cookies,
        status_file=station_status,
        nice=nice,
    )
    err_console.print(f"flawscope web app on http://{host}:{port} (Ctrl-C stops it)")
    serve(config)


def _open(audit: str):
    from flawscope.audit import AuditLog
    from flawscope.web.database import WebDB

    AuditLog.open(audit).close()  # creates the audit tables on first use
    return WebDB(audit)


def _password(confirm: bool) -> str:
    from_env = os.environ.get("FLAWSCOPE_PASSWORD")
    if from_env:
        return from_env
    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if not line:
            raise FlawscopeError("no password: type it, pipe it on standard input, or set FLAWSCOPE_PASSWORD")
        return line
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=confirm))


@users_app.command("add")
def users_add_command(
    name: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str, typer.Option(help="operator, engineer or admin.")] = "operator",
    audit: AuditOption = DEFAULT_AUDIT,
) -> None:
    """Add a user (the password is asked for, or read from FLAWSCOPE_PASSWORD or standard input)."""
    from flawscope.web.events import record_event
    from flawscope.web.users import check_role, check_username, create_user

    check_username(name)
    check_role(role)
    db = _open(audit)
    try:
        user = create_user(db, name, _password(confirm=True), role, created_by="cli")
        record_event(db, "user_created", actor="cli", target=name, detail={"role": role})
    finally:
        db.close()
    console.print(f"user [bold]{user.username}[/bold] added with role {user.role}")


@users_app.command("list")
def users_list_command(audit: AuditOption = DEFAULT_AUDIT) -> None:
    """List the users and their roles."""
    from flawscope.web.users import list_users

    db = _open(audit)
    try:
        found = list_users(db)
    finally:
        db.close()
    table = kv_table("Users")
    for user in found:
        table.add_row(user.username, user.role + (" (disabled)" if user.disabled else ""))
    console.print(table if found else "no users yet: add one with 'flawscope users add NAME --role admin'")


@users_app.command("set")
def users_set_command(
    name: Annotated[str, typer.Argument(help="Login name.")],
    role: Annotated[str | None, typer.Option(help="New role.")] = None,
    disable: Annotated[bool, typer.Option(help="Disable the user (ends their sessions).")] = False,
    enable: Annotated[bool, typer.Option(help="Enable the user again.")] = False,
    password: Annotated[bool, typer.Option(help="Set a new password (asked for).")] = False,
    audit: AuditOption = DEFAULT_AUDIT,
) -> None:
    """Change a user's role, state or password."""
    from flawscope.web.events import record_event
    from flawscope.web.users import update_user

    if disable and enable:
        raise FlawscopeError("--disable and --enable: give one")
    db = _open(audit)
    try:
        user = update_user(
            db,
            name,
            role=role,
            disabled=True if disable else False if enable else None,
            password=_password(confirm=True) if password else None,
        )
        detail = {"role": role, "disabled": user.disabled, "password_changed": password}
        record_event(db, "user_changed", actor="cli", target=name, detail=detail)
    finally:
        db.close()
    console.print(f"user {user.username}: {user.role}{' (disabled)' if user.disabled else ''}")


@users_app.command("token")
def users_token_command(
    name: Annotated[str, typer.Argument(help="Login name the token acts for.")],
    label: Annotated[str, typer.Option(help="What the token is for.")] = "script",
    audit: AuditOption = DEFAULT_AUDIT,
) -> None:
    """Issue an API token (printed once) for scripts: 'Authorization: Bearer <token>'."""
    from flawscope.web.events import record_event
    from flawscope.web.users import create_token

    db = _open(audit)
    try:
        secret, info = create_token(db, name, label)
        record_event(
            db, "token_created", actor="cli", target=info.token_id, detail={"user": name, "label": label}
        )
    finally:
        db.close()
    err_console.print(f"token {info.token_id} for {name} (shown once):")
    console.print(secret, highlight=False)
