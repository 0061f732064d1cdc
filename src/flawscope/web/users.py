"""Users, roles, API tokens and login sessions of the web app.

Roles are ordered: an ``operator`` reviews and flags parts, an ``engineer`` also changes settings
and inspects uploads, an ``admin`` also manages users and tokens. Passwords are kept as argon2id
hashes (argon2-cffi's defaults); session ids and API tokens are random 256-bit secrets of which
only the SHA-256 is stored, so a copy of the database logs nobody in.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from flawscope.audit.schema import sessions, tokens, users
from flawscope.errors import InputError
from flawscope.web.database import WebDB, storable
from flawscope.web.errors import ConflictError, NotFoundError

ROLES = ("operator", "engineer", "admin")
TOKEN_PREFIX = "fst_"
MIN_PASSWORD = 8
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_U, _T, _S = users.c, tokens.c, sessions.c
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    # Verifying against this hash when the user does not exist takes as long as a real check, so
    # the time of a failed login does not tell whether the name exists.
    return _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class User:
    """A user as the app sees it (never the password hash).

    Attributes:
        username: login name.
        role: ``operator``, ``engineer`` or ``admin``.
        disabled: a disabled user cannot log in and their tokens and sessions stop working.
        created_at: seconds since the epoch.
        created_by: who created the user.
    """

    username: str
    role: str
    disabled: bool = False
    created_at: float = 0.0
    created_by: str = ""

    def allows(self, role: str) -> bool:
        """Whether this user holds ``role`` or a higher one."""
        return not self.disabled and ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class SessionInfo:
    """A live login session: its user and the CSRF token its forms must carry."""

    user: User
    csrf: str
    expires_at: float


def digest(secret: str) -> str:
    """SHA-256 (hex) of a session id or token: what the database keeps."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_username(name: str) -> str:
    """The name, if it is a valid user name.

    Raises:
        InputError: not 1-64 letters, digits, ``.``, ``_``, ``@`` or ``-`` starting with a letter or digit.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise InputError(
            "username", "must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return name


def check_role(role: str) -> str:
    """The role, if it is one of :data:`ROLES`.

    Raises:
        InputError: an unknown role.
    """
    if role not in ROLES:
        raise InputError("role", f"{role!r} is not one of {', '.join(ROLES)}")
    return role


def _secret(password: str) -> bytes:
    # Any text is a password, even one a browser could not have sent (unpaired surrogates).
    return password.encode("utf-8", "surrogatepass")


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InputError("password", f"must have at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise InputError("password", "must have at most 1024 characters")


def _user(row: sa.RowMapping) -> User:
    return User(
        username=row["username"],
        role=row["role"],
        disabled=bool(row["disabled"]),
        created_at=float(row["created_at"]),
        created_by=row["created_by"],
    )


def create_user(db: WebDB, username: str, password: str, role: str, *, created_by: str) -> User:
    """Add a user.

    Raises:
        InputError: an invalid name, role or password, or a name already taken.
    """
    check_username(username)
    check_role(role)
    _check_password(password)
    now = time.time()
    hashed = _hasher.hash(_secret(password))
    with db.write("web_users") as conn:
        if conn.execute(sa.select(_U.username).where(_U.username == username)).first() is not None:
            raise ConflictError("username", f"user {username!r} already exists")
        conn.execute(
            users.insert().values(
                username=username,
                password_hash=hashed,
                role=role,
                created_at=now,
                created_by=created_by,
                disabled=False,
                password_changed_at=now,
            )
        )
    return User(username, role, False, now, created_by)


def get_user(db: WebDB, username: str) -> User | None:
    """The user, or None."""
    with db.read() as conn:
        row = conn.execute(sa.select(users).where(_U.username == username)).mappings().first()
    return None if row is None else _user(row)


def list_users(db: WebDB) -> list[User]:
    """Every user, by name."""
    with db.read() as conn:
        rows = conn.execute(sa.select(users).order_by(_U.username)).mappings().all()
    return [_user(r) for r in rows]


def update_user(
    db: WebDB,
    username: str,
    *,
    role: str | None = None,
    disabled: bool | None = None,
    password: str | None = None,
) -> User:
    """Change a user's role, enable or disable them, or set a new password.

    Disabling a user or changing their password ends their sessions.

    Raises:
        InputError: no such user, an invalid value, or a change that would leave no enabled admin.
    """
    values: dict[str, object] = {}
    if role is not None:
        values["role"] = check_role(role)
    if disabled is not None:
        values["disabled"] = bool(disabled)
    if password is not None:
        _check_password(password)
        values["password_hash"] = _hasher.hash(_secret(password))
        values["password_changed_at"] = time.time()
    with db.write("web_users", "web_sessions") as conn:
        row = conn.execute(sa.select(users).where(_U.username == username)).mappings().first()
        if row is None:
            raise NotFoundError("username", f"there is no user {username!r}")
        if values:
            conn.execute(users.update().where(_U.username == username).values(**values))
        admins = conn.execute(
            sa.select(sa.func.count()).where(_U.role == "admin", _U.disabled.is_(False))
        ).scalar_one()
        if not admins and row["role"] == "admin" and not row["disabled"]:
            raise InputError("role", "this change would leave no enabled admin")
        if disabled or password is not None:
            conn.execute(
                sessions.update()
                .where(_S.username == username, _S.ended_at.is_(None))
                .values(ended_at=time.time())
            )
        row = conn.execute(sa.select(users).where(_U.username == username)).mappings().one()
    return _user(row)


def authenticate(db: WebDB, username: str, password: str) -> User | None:
    """The user if the name and password match an enabled user, else None (in constant-ish time)."""
    with db.read() as conn:
        row = conn.execute(sa.select(users).where(_U.username == username)).mappings().first()
    stored = _dummy_hash() if row is None else str(row["password_hash"])
    try:
        _hasher.verify(stored, _secret(password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None or row["disabled"]:
        return None
    return _user(row)


# ----------------------------------------------------------------------------------- sessions


def start_session(db: WebDB, user: User, ttl_s: float) -> tuple[str, SessionInfo]:
    """Open a login session.

    Returns:
        ``(session id for the cookie, the session)``; the id itself is not stored.
    """
    secret = secrets.token_urlsafe(32)
    now = time.time()
    info = SessionInfo(user, secrets.token_urlsafe(32), now + ttl_s)
    with db.write("web_sessions") as conn:
        conn.execute(
            sessions.insert().values(
                session_hash=digest(secret),
                username=user.username,
                csrf=info.csrf,
                created_at=now,
                expires_at=info.expires_at,
                ended_at=None,
            )
        )
        # Expired sessions are of no use to anybody: drop them while we hold the lock.
        conn.execute(sessions.delete().where(_S.expires_at < now - 86400))
    return secret, info


def find_session(db: WebDB, secret: str) -> SessionInfo | None:
    """The live session of a cookie value, or None (unknown, ended, expired, or its user disabled)."""
    if not secret or len(secret) > 200:
        return None
    query = (
        sa.select(sessions.c.csrf, sessions.c.expires_at, users)
        .join(users, _U.username == _S.username)
        .where(_S.session_hash == digest(secret), _S.ended_at.is_(None), _S.expires_at > time.time())
    )
    with db.read() as conn:
        row = conn.execute(query).mappings().first()
    if row is None or row["disabled"]:
        return None
    return SessionInfo(_user(row), str(row["csrf"]), float(row["expires_at"]))


def end_session(db: WebDB, secret: str) -> None:
    """Log a session out (its cookie stops working at once)."""
    with db.write("web_sessions") as conn:
        conn.execute(
            sessions.update()
            .where(_S.session_hash == digest(secret), _S.ended_at.is_(None))
            .values(ended_at=time.time())
        )


def same_secret(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets (CSRF tokens)."""
    return bool(a) and bool(b) and hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


# ------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenInfo:
    """An API token (never its secret).

    Attributes:
        token_id: public id, shown in lists and used to revoke it.
        username: whose rights the token carries.
        label: what it is for.
        created_at: seconds since the epoch.
        revoked_at: when it was revoked, or None.
    """

    token_id: str
    username: str
    label: str
    created_at: float
    revoked_at: float | None


def create_token(db: WebDB, username: str, label: str) -> tuple[str, TokenInfo]:
    """Issue an API token for a user.

    Returns:
        ``(the token, shown once; its record)``.

    Raises:
        InputError: no such user, or an empty label.
    """
    label = storable(label)
    if not label.strip():
        raise InputError("label", "say what the token is for")
    token_id = secrets.token_hex(6)
    secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    now = time.time()
    with db.write("web_tokens") as conn:
        if conn.execute(sa.select(_U.username).where(_U.username == username)).first() is None:
            raise NotFoundError("username", f"there is no user {username!r}")
        conn.execute(
            tokens.insert().values(
                token_id=token_id,
                token_hash=digest(secret),
                username=username,
                label=label.strip()[:200],
                created_at=now,
                revoked_at=None,
            )
        )
    return secret, TokenInfo(token_id, username, label.strip()[:200], now, None)


def find_token(db: WebDB, secret: str) -> User | None:
    """The user an API token acts for, or None (unknown, revoked, or the user disabled)."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    query = (
        sa.select(users)
        .join(tokens, _T.username == _U.username)
        .where(_T.token_hash == digest(secret), _T.revoked_at.is_(None))
    )
    with db.read() as conn:
        row = conn.execute(query).mappings().first()
    if row is None or row["disabled"]:
        return None
    return _user(row)


def list_tokens(db: WebDB, username: str | None = None) -> list[TokenInfo]:
    """Tokens (revoked ones included), newest first; only one user's when ``username`` is given."""
    query = sa.select(tokens).order_by(_T.created_at.desc())
    if username is not None:
        query = query.where(_T.username == username)
    with db.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        TokenInfo(r["token_id"], r["username"], r["label"], float(r["created_at"]), r["revoked_at"])
        for r in rows
    ]


def revoke_token(db: WebDB, token_id: str) -> TokenInfo:
    """Revoke a token (it stops working at once).

    Raises:
        InputError: no such token.
    """
    with db.write("web_tokens") as conn:
        row = conn.execute(sa.select(tokens).where(_T.token_id == token_id)).mappings().first()
        if row is None:
            raise NotFoundError("token_id", f"there is no token {token_id!r}")
        revoked = row["revoked_at"] or time.time()
        conn.execute(tokens.update().where(_T.token_id == token_id).values(revoked_at=revoked))
    return TokenInfo(row["token_id"], row["username"], row["label"], float(row["created_at"]), revoked)
