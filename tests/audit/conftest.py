"""Fixtures for the audit trail tests: a real SQLite file and a real PostgreSQL server on 127.0.0.1.

The PostgreSQL server comes from the Debian ``postgresql`` package (binaries under
``/usr/lib/postgresql/<version>/bin``); it is initialised in a temporary folder, started for the test
session and stopped afterwards. Tests that need it skip, saying why, when it cannot be started.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from flawscope.types import InspectionRecord, Outcome, Region

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path | None:
    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for folder in candidates:
        if all((Path(folder) / exe).is_file() for exe in ("initdb", "postgres", "pg_ctl")):
            return Path(folder)
    return None


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a database on a PostgreSQL server started for this test session."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install -y postgresql)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]')")
    as_user: list[str] = []
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root.
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    tmp = Path(tempfile.mkdtemp(prefix="flawscope-pg-"))
    if as_user:
        shutil.chown(tmp, "postgres", "postgres")
    data, log = tmp / "data", tmp / "server.log"
    port = free_port()
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        initdb = [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        init = subprocess.run(
            [*as_user, *initdb, "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-500:]}")
        # fsync=off: the server's own durability is not under test and shutdown would fsync every database.
        options = f"-k {tmp} -h {HOST} -p {port} -c fsync=off"
        start = subprocess.run(
            [*pg_ctl, "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        if start.returncode != 0:
            tail = log.read_text()[-500:] if log.exists() else start.stderr
            pytest.skip(f"PostgreSQL did not start: {tail.strip()}")
        admin = sa.create_engine(
            f"postgresql+psycopg://postgres@{HOST}:{port}/postgres", isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.exec_driver_sql("CREATE DATABASE flawscope_audit")
        admin.dispose()
        yield f"postgresql+psycopg://postgres@{HOST}:{port}/flawscope_audit"
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"PostgreSQL could not be started: {exc}")
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*pg_ctl, "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(tmp, ignore_errors=True)


def new_pg_database(base_url: str) -> str:
    """A fresh, empty database on the session's server, so each test starts from an empty log."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return base_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def fresh_pg_url(pg_url: str) -> str:
    """URL of an empty database of its own on the session's PostgreSQL server."""
    return new_pg_database(pg_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def audit_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty audit database, once on a SQLite file and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return new_pg_database(request.getfixturevalue("pg_url"))


@pytest.fixture
def run_sql() -> Iterator[Callable[..., list[tuple[object, ...]]]]:
    """Run SQL on a database behind the log's back (to tamper with it), returning any rows."""
    engines: dict[str, sa.Engine] = {}

    def run(url: str, statement: str, **params: object) -> list[tuple[object, ...]]:
        engine = engines.setdefault(url, sa.create_engine(url))
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []

    yield run
    for engine in engines.values():
        engine.dispose()


def record(i: int = 0, **fields: object) -> InspectionRecord:
    values: dict[str, object] = {
        "part_id": f"part-{i:05d}",
        "station": "station-A",
        "acquired_at": 1_700_000_000.0 + i * 0.125,
        "outcome": Outcome.PASS if i % 3 else Outcome.FAIL,
        "score": 0.1 + i / 7,
        "normalized_score": (0.1 + i / 7) / 2.5,
        "regions": (Region(bbox=(1, 2, 30, 40), area_px=17 + i, peak=0.93, centroid=(12.5, 20.25)),)
        if i % 3 == 0
        else (),
        "image_sha256": f"{i:064x}",
        "model_hash": "ab" * 32,
        "model_version": "1.4.0",
        "threshold_version": 3,
        "latency_ms": 12.5,
        "source": "folder:///images",
    }
    values.update(fields)
    return InspectionRecord(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_record() -> Callable[..., InspectionRecord]:
    """``make_record(i, **fields)``: a plausible inspection record number ``i``."""
    return record
