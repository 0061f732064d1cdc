"""``flawscope serve`` and ``flawscope users`` as a user runs them, and a server killed mid-review."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.web.conftest import Station, make_station, token_for

from flawscope.audit import AuditLog
from flawscope.web.database import WebDB
from flawscope.web.events import verify_events
from flawscope.web.reviews import latest_reviews

CLI = [sys.executable, "-m", "flawscope.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"FLAWSCOPE_PASSWORD": password} if password else {})}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL
    )


def start(station: Station, port: int) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        [*CLI, "serve", "--audit", station.url, "--images", str(station.images), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
        if server.poll() is not None:
            raise AssertionError(f"serve exited: {server.stderr.read() if server.stderr else ''}")
    server.kill()
    raise AssertionError("serve did not start in 60 s")


def stop(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def listening_address(port: int) -> set[str]:
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":  # LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@pytest.fixture
def station(tmp_path: Path) -> Station:
    return make_station(tmp_path / "st", n=28)


def test_users_are_managed_from_the_command_line(station: Station) -> None:
    added = cli("users", "add", "root", "--role", "admin", "--audit", station.url, password="long enough")
    assert added.returncode == 0 and "root" in added.stdout, added.stderr
    token = cli("users", "token", "root", "--label", "script", "--audit", station.url)
    assert token.returncode == 0 and token.stdout.strip().startswith("fst_")
    listed = cli("users", "list", "--audit", station.url)
    assert "root" in listed.stdout and "admin" in listed.stdout
    # Each mistake is one line and exit code 2 (the other checks are the users module's own tests).
    for bad, message in (
        (("users", "add", "bob", "--role", "boss"), "'boss' is not one of operator, engineer, admin"),
        (("users", "set", "root", "--role", "operator"), "no enabled admin"),
    ):
        run = cli(*bad, "--audit", station.url, password="long enough")
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_serve_listens_on_loopback_and_refuses_bad_settings(station: Station, tmp_path: Path) -> None:
    port = free_port()
    server = start(station, port)
    try:
        assert listening_address(port) == {"127.0.0.1"}
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/me").status_code == 401
    finally:
        stop(server)
    assert server.returncode in (0, 130)  # Ctrl-C is how a user stops it
    missing = cli("serve", "--audit", station.url, "--images", str(tmp_path / "nowhere"), "--port", str(port))
    assert missing.returncode == 2 and "image store folder does not exist" in missing.stderr
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        busy = cli(
            "serve",
            "--audit",
            station.url,
            "--images",
            str(station.images),
            "--port",
            str(taken.getsockname()[1]),
        )
        assert busy.returncode == 2 and "cannot listen there" in busy.stderr
    finally:
        taken.close()
    assert (
        cli("serve", "--audit", station.url, "--images", str(station.images), "--shifts", "25:00").returncode
        == 2
    )


def test_reviews_survive_a_sigkill_of_the_server_mid_review(station: Station) -> None:
    """Reviews (with drawn masks) stream in; the server is killed with SIGKILL; after a restart every
    acknowledged review is there, complete, the chain verifies, and replaying every request records
    each review exactly once."""
    station.add_parts(100, seed=9, start=2000)
    cli("users", "add", "alice", "--audit", station.url, password="long enough")
    token = token_for(station.url, "alice")
    with AuditLog.open(station.url, read_only=True) as log:
        targets = [r.seq for r in log.records() if r.kind == "inspection"]
    polygon = [[[0.2, 0.2], [0.5, 0.25], [0.4, 0.6]]]
    bodies = [
        {"ref_seq": seq, "verdict": "defect" if i % 2 else "good", "request_id": f"kill-test-{i:05d}",
         **({"category": "dent", "regions": polygon} if i % 2 else {})}
        for i, seq in enumerate(targets)
    ]  # fmt: skip
    acknowledged: list[dict] = []
    port = free_port()
    server = start(station, port)
    stop_sending = threading.Event()

    def reviewer() -> None:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {token}"}
        ) as api:
            for body in bodies:
                if stop_sending.is_set():
                    return
                try:
                    answer = api.post("/api/v1/reviews", json=body, timeout=10)
                except httpx.TransportError:
                    return
                if answer.status_code == 201:
                    acknowledged.append(answer.json())

    sender = threading.Thread(target=reviewer)
    sender.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    stop_sending.set()
    sender.join(30)
    assert 30 <= len(acknowledged) < len(bodies), "the kill did not land mid-review"

    with AuditLog.open(station.url, read_only=True) as log:
        assert log.verify().ok
    db = WebDB(station.url)
    try:
        stored = {r.request_id: r for r in latest_reviews(db)}
        for ack in acknowledged:
            review = stored[ack["request_id"]]
            assert review.seq == ack["seq"] and review.verdict == ack["verdict"]
            if ack["mask"]:
                mask = station.images.resolve() / ack["mask"]
                import hashlib

                assert hashlib.sha256(mask.read_bytes()).hexdigest() == ack["mask_sha256"]
        assert verify_events(db) == (True, "")
    finally:
        db.close()
    # Restart and replay every request: the recorded ones come back as they were, the rest are added.
    server = start(station, port)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {token}"}
        ) as api:
            statuses = [api.post("/api/v1/reviews", json=body, timeout=30).status_code for body in bodies]
        recorded_before = len({r for r in stored})
        assert statuses.count(200) == recorded_before and statuses.count(201) == len(bodies) - recorded_before
    finally:
        stop(server)
    db = WebDB(station.url)
    try:
        ids = [r.request_id for r in latest_reviews(db)]
        assert sorted(ids) == sorted(b["request_id"] for b in bodies)  # each exactly once
    finally:
        db.close()
    with AuditLog.open(station.url, read_only=True) as log:
        assert log.verify().ok
        assert sum(1 for r in log.records() if r.kind == "review") == len(bodies)
