"""Opening an audit database that cannot be reached, opened or written: a clear InputError, quickly."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time

import pytest

from flawscope.audit import AuditLog, AuditWriteError
from flawscope.errors import InputError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_missing_directory(tmp_path):
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'audit.db'}"
    with pytest.raises(InputError, match="does not exist") as err:
        AuditLog.open(url)
    assert err.value.where == url
    assert "cannot open the audit database" in err.value.problem
    assert not (tmp_path / "no").exists()


def test_postgres_not_listening_fails_fast_without_showing_the_password():
    url = f"postgresql+psycopg://flaw:s3cret-pw@127.0.0.1:{free_port()}/audit"
    start = time.monotonic()
    with pytest.raises(InputError, match="cannot open the audit database") as err:
        AuditLog.open(url, connect_timeout_s=2)
    assert time.monotonic() - start < 5
    assert "s3cret-pw" not in str(err.value)
    assert err.value.where.startswith("postgresql+psycopg://flaw:***@127.0.0.1")


def test_postgres_missing_database(pg_url):
    url = pg_url.rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(InputError, match="no_such_database"):
        AuditLog.open(url)


def test_bare_postgresql_url_uses_psycopg(pg_url):
    url = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with AuditLog.open(url) as log:
        assert log.url == url
        assert log.verify().ok


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("not a url", "not a database URL"),
        ("mysql://u:pw@127.0.0.1/x", "only sqlite"),
        ("sqlite://", "in-memory"),
        ("sqlite:///:memory:", "in-memory"),
    ],
)
def test_unusable_urls(url, match):
    with pytest.raises(InputError, match=match):
        AuditLog.open(url)


def test_read_only_sqlite_file_is_refused_for_writing_but_readable(tmp_path, make_record):
    path = tmp_path / "audit.db"
    with AuditLog.open(f"sqlite:///{path}") as log:
        log.append_many([make_record(i) for i in range(4)])
    ro_url = f"sqlite:///file:{path}?mode=ro&uri=true"
    with pytest.raises(InputError, match="readonly"):
        AuditLog.open(ro_url)
    with AuditLog.open(ro_url, read_only=True) as reader:
        assert reader.count() == 4 and reader.verify().ok
        with pytest.raises(AuditWriteError, match="read-only"):
            reader.append(make_record(5))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to files whatever their permissions")
def test_write_protected_sqlite_file(tmp_path, make_record):
    path = tmp_path / "audit.db"
    with AuditLog.open(f"sqlite:///{path}") as log:
        log.append(make_record(0))
    path.chmod(0o444)
    with pytest.raises(InputError, match="cannot open the audit database"):
        AuditLog.open(f"sqlite:///{path}")


def test_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "audit.db"
    path.write_bytes(b"this is a CSV export, not a database\n" * 100)
    with pytest.raises(InputError, match="not a database"):
        AuditLog.open(f"sqlite:///{path}")


def test_database_of_something_else(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE inspections (id INTEGER PRIMARY KEY, note TEXT)")
    with pytest.raises(InputError, match="not a flawscope audit database"):
        AuditLog.open(f"sqlite:///{path}")


def test_other_schema_version(audit_url, run_sql):
    AuditLog.open(audit_url).close()
    run_sql(audit_url, "UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(InputError, match="schema version 99, newer than this flawscope reads"):
        AuditLog.open(audit_url)


def test_read_only_open_of_an_empty_database(tmp_path):
    (tmp_path / "empty.db").touch()
    with pytest.raises(InputError, match="no audit log"):
        AuditLog.open(f"sqlite:///{tmp_path / 'empty.db'}", read_only=True)


def test_read_only_open_of_a_missing_database_creates_no_file(tmp_path):
    with pytest.raises(InputError, match="no audit database at"):
        AuditLog.open(f"sqlite:///{tmp_path / 'missing.db'}", read_only=True)
    assert list(tmp_path.iterdir()) == []


def test_a_file_path_instead_of_a_url_gets_the_url_to_write(tmp_path):
    with pytest.raises(InputError, match=f"sqlite:///{tmp_path}/audit.db"):
        AuditLog.open(str(tmp_path / "audit.db"))
    assert list(tmp_path.iterdir()) == []


def test_sqlite_pragmas(tmp_path, make_record):
    path = tmp_path / "audit.db"
    with pytest.raises(InputError, match="synchronous"):
        AuditLog.open(f"sqlite:///{path}", synchronous="OFF")
    for mode, level in (("FULL", 2), ("normal", 1)):
        with AuditLog.open(f"sqlite:///{path}", synchronous=mode) as log:
            log.append(make_record(0))
            with log._engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == level
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000


def test_opening_waits_for_another_writer_of_a_new_file_instead_of_failing(tmp_path, make_record):
    # Two processes creating one new log: while one holds the write lock of the file, still in
    # rollback mode, SQLite refuses the other's switch to WAL at once ("database is locked").
    path = tmp_path / "audit.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
    release.start()
    try:
        started = time.monotonic()
        with AuditLog.open(f"sqlite:///{path}", busy_timeout_s=10.0) as log:
            assert time.monotonic() - started >= 0.4  # it waited for the other writer
            log.append(make_record(0))
            assert log.count() == 1
    finally:
        release.join()
        other.close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:  # a writer that keeps its lock: a clear error once the busy timeout has passed
        with pytest.raises(InputError, match="database is locked"):
            AuditLog.open(f"sqlite:///{path}", busy_timeout_s=0.3)
    finally:
        other.close()


def test_append_after_close(tmp_path, make_record):
    log = AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")
    log.close()
    with pytest.raises(AuditWriteError, match="closed"):
        log.append(make_record(0))
