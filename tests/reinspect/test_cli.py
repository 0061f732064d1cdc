"""``flawscope reinspect`` as a user runs it: bad input is one clear line, never a traceback or a pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flawscope.reinspect.store import ResultStore


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flawscope.cli", "reinspect", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},  # table cells on one line each
    )


def _error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # one line says what is wrong
    return lines[0]


def test_unreadable_images_are_recorded_as_errors_never_passes(archive, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    done = _cli(str(archive.root), "--bundle", str(archive.bundle), "--audit", url)
    assert done.returncode == 0, done.stderr
    assert "error" in done.stdout and "unreadable or not scored: a reject" in done.stdout
    with ResultStore.open(url) as store:
        rows = list(
            store._engine.connect().exec_driver_sql(
                "select outcome from reinspections where image_key like '%broken%'"
            )
        )
    assert [r[0] for r in rows] == ["error"]


def test_an_unreachable_cluster_is_one_line(archive, tmp_path: Path) -> None:
    from .conftest import free_port

    url = f"sqlite:///{tmp_path / 'r.db'}"
    address = f"127.0.0.1:{free_port()}"
    line = _error_line(
        _cli(
            str(archive.root),
            "--bundle",
            str(archive.bundle),
            "--audit",
            url,
            "--engine",
            "ray",
            "--address",
            address,
        )
    )
    assert f"cannot reach the Ray cluster at {address}" in line


def test_a_missing_archive_and_an_unknown_engine_are_one_line(archive, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert "does not exist" in _error_line(
        _cli(str(tmp_path / "gone"), "--bundle", str(archive.bundle), "--audit", url)
    )
    assert "engine" in _error_line(
        _cli(str(archive.root), "--bundle", str(archive.bundle), "--audit", url, "--engine", "spark")
    )
