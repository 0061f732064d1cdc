"""Users, roles, sessions and tokens: secrets are never stored, and every check holds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from flawscope.audit import AuditLog
from flawscope.errors import InputError
from flawscope.web.database import WebDB
from flawscope.web.events import list_events, record_event, verify_events
from flawscope.web.users import (
    authenticate,
    create_token,
    create_user,
    end_session,
    find_session,
    find_token,
    revoke_token,
    start_session,
    update_user,
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[WebDB]:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    AuditLog.open(url).close()
    opened = WebDB(url)
    yield opened
    opened.close()


def test_passwords_are_argon2_hashes_and_checked(db: WebDB) -> None:
    create_user(db, "alice", "s3cret-pass", "operator", created_by="test")
    with db.read() as conn:
        stored = conn.execute(sa.text("select password_hash from web_users")).scalar_one()
    assert stored.startswith("$argon2id$") and "s3cret-pass" not in stored
    assert authenticate(db, "alice", "s3cret-pass") is not None
    assert authenticate(db, "alice", "wrong-pass") is None
    assert authenticate(db, "nobody", "s3cret-pass") is None


@pytest.mark.parametrize(
    ("name", "password", "role", "field"),
    [
        ("", "long enough", "operator", "username"),
        ("../x", "long enough", "operator", "username"),
        ("bob", "short", "operator", "password"),
        ("bob", "long enough", "superuser", "role"),
    ],
)
def test_bad_users_are_refused(db: WebDB, name: str, password: str, role: str, field: str) -> None:
    with pytest.raises(InputError) as caught:
        create_user(db, name, password, role, created_by="test")
    assert caught.value.where == field


def test_a_name_is_taken_once(db: WebDB) -> None:
    create_user(db, "alice", "long enough", "operator", created_by="test")
    with pytest.raises(InputError, match="already exists"):
        create_user(db, "alice", "other password", "admin", created_by="test")


def test_sessions_store_only_a_hash_and_end(db: WebDB) -> None:
    user = create_user(db, "alice", "long enough", "operator", created_by="test")
    secret, info = start_session(db, user, ttl_s=60)
    with db.read() as conn:
        stored = conn.execute(sa.text("select session_hash from web_sessions")).scalar_one()
    assert stored != secret and len(stored) == 64
    found = find_session(db, secret)
    assert found is not None and found.user.username == "alice" and found.csrf == info.csrf
    end_session(db, secret)
    assert find_session(db, secret) is None
    assert find_session(db, "made-up") is None


def test_an_expired_session_does_not_work(db: WebDB) -> None:
    user = create_user(db, "alice", "long enough", "operator", created_by="test")
    secret, _ = start_session(db, user, ttl_s=-1)
    assert find_session(db, secret) is None


def test_disabling_a_user_ends_sessions_and_tokens(db: WebDB) -> None:
    create_user(db, "root", "long enough", "admin", created_by="test")
    user = create_user(db, "alice", "long enough", "operator", created_by="test")
    secret, _ = start_session(db, user, ttl_s=60)
    token, _ = create_token(db, "alice", "script")
    assert find_token(db, token) is not None
    update_user(db, "alice", disabled=True)
    assert find_session(db, secret) is None and find_token(db, token) is None
    assert authenticate(db, "alice", "long enough") is None


def test_tokens_can_be_revoked(db: WebDB) -> None:
    create_user(db, "alice", "long enough", "engineer", created_by="test")
    token, info = create_token(db, "alice", "line script")
    user = find_token(db, token)
    assert (
        user is not None and user.role == "engineer" and user.allows("operator") and not user.allows("admin")
    )
    revoke_token(db, info.token_id)
    assert find_token(db, token) is None
    assert find_token(db, token[:-1] + ("a" if token[-1] != "a" else "b")) is None


def test_the_last_admin_stays(db: WebDB) -> None:
    create_user(db, "root", "long enough", "admin", created_by="test")
    with pytest.raises(InputError, match="no enabled admin"):
        update_user(db, "root", role="operator")
    with pytest.raises(InputError, match="no enabled admin"):
        update_user(db, "root", disabled=True)
    create_user(db, "second", "long enough", "admin", created_by="test")
    assert update_user(db, "root", role="operator").role == "operator"


def test_the_change_log_is_a_chain_that_detects_edits(db: WebDB) -> None:
    for n in range(5):
        record_event(db, "login", actor=f"user{n}", target="/login", detail={"n": n}, remote="127.0.0.1")
    assert verify_events(db) == (True, "")
    assert [e.actor for e in list_events(db)] == [f"user{n}" for n in reversed(range(5))]
    with db.write() as conn:
        conn.execute(sa.text("update web_events set actor='mallory' where seq=3"))
    ok, problem = verify_events(db)
    assert not ok and "event 3" in problem
    with db.write() as conn:
        conn.execute(sa.text("update web_events set actor='user2' where seq=3"))
        conn.execute(sa.text("delete from web_events where seq=2"))
    ok, problem = verify_events(db)
    assert not ok and "event 2 is missing" in problem
