"""Fixtures for the web app: a real line's audit database and image store, users, and a live server.

The parts come through the real line (``run_line``) with a small deterministic inspector that gives
anomaly maps, so the image store holds what a station's holds: images, and maps for the parts that
went to review or failed. Servers listen on a free port of 127.0.0.1 and are stopped after each test.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from flawscope.acquire import Source
from flawscope.audit import AuditLog
from flawscope.line import run_line
from flawscope.types import Frame, Outcome, Provenance, Verdict

PASSWORD = "correct horse battery"
USERS = {"alice": "operator", "erin": "engineer", "root": "admin"}


class BlobInspector:
    """Score = peak of a smoothed bright-blob map: pass < 0.6 <= review < 1.0 <= fail.

    A stopped part is named a ``scratch`` with a confidence that grows with the score.
    """

    model_hash = "b" * 64
    version = "blob.t1"
    thresholds = SimpleNamespace(version=1)
    provenance = Provenance(model_hash, version, 1, threshold_sha256="1" * 64, graph_sha256="2" * 64)

    def inspect_many(self, images: Sequence[np.ndarray | None]) -> list[Verdict]:
        out = []
        for image in images:
            assert image is not None
            gray = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
            amap = cv2.GaussianBlur(np.maximum(gray - 80.0, 0.0) / 90.0, (0, 0), 3)
            score = float(amap.max())
            outcome = Outcome.PASS if score < 0.6 else Outcome.REVIEW if score < 1.0 else Outcome.FAIL
            out.append(
                Verdict(
                    outcome,
                    score,
                    score / 1.0,
                    threshold_version=1,
                    model_hash=self.model_hash,
                    anomaly_map=amap,
                    category=None if outcome is Outcome.PASS else "scratch",
                    confidence=None if outcome is Outcome.PASS else min(0.5 + score / 4.0, 0.99),
                )
            )
        return out


class PartSource(Source):
    """``n`` generated parts: noise, and a bright blob of rising strength on some (seeded)."""

    def __init__(
        self,
        n: int,
        seed: int = 0,
        camera: str = "test://cam-1",
        start: int = 0,
        strengths: Sequence[float] = (0, 0, 0, 0, 30, 85, 170),
        every_s: float = 0.0,
    ) -> None:
        super().__init__(camera)
        self.n, self.seed, self.start, self.strengths, self.every_s = n, seed, start, strengths, every_s

    def _frames(self):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(self.seed)
        yy, xx = np.mgrid[0:96, 0:128]
        for i in range(self.n):
            image = rng.integers(60, 110, (96, 128), dtype=np.uint8).astype(np.float32)
            if self.every_s:
                time.sleep(self.every_s)
            strength = self.strengths[i % len(self.strengths)] * rng.uniform(0.8, 1.2)
            cy, cx = rng.integers(20, 76), rng.integers(20, 108)
            image += strength * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 50.0)
            yield Frame(
                f"part-{self.start + i:05d}", np.clip(image, 0, 255).astype(np.uint8), time.time(), self.uri
            )


@dataclass
class Station:
    """An audit database and image store filled by the line."""

    url: str
    images: Path
    root: Path

    def add_parts(
        self, n: int, seed: int = 1, start: int = 1000, camera: str = "test://cam-1", **kw: Any
    ) -> None:
        """Run ``n`` more parts through the line (``kw``: :class:`PartSource` options)."""
        with AuditLog.open(self.url) as log:
            source = PartSource(n, seed, camera, start, **kw)
            run_line(source, BlobInspector(), log, station="st-1", store_images=self.images, batch_size=4)


def make_station(root: Path, n: int = 70) -> Station:
    root.mkdir(parents=True, exist_ok=True)
    station = Station(f"sqlite:///{root / 'audit.db'}", root / "images", root)
    station.add_parts(n, seed=0, start=0)
    return station


def add_users(url: str) -> None:
    from flawscope.web.database import WebDB
    from flawscope.web.users import create_user, list_users

    db = WebDB(url)
    try:
        known = {u.username for u in list_users(db)}
        for name, role in USERS.items():
            if name not in known:
                create_user(db, name, PASSWORD, role, created_by="test")
    finally:
        db.close()


def token_for(url: str, name: str) -> str:
    from flawscope.web.database import WebDB
    from flawscope.web.users import create_token

    db = WebDB(url)
    try:
        return create_token(db, name, "tests")[0]
    finally:
        db.close()


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> Station:
    """70 parts of one camera, about a seventh each to review and to fail; users alice/erin/root."""
    made = make_station(tmp_path_factory.mktemp("station"))
    add_users(made.url)
    return made


@dataclass
class Served:
    """A running web app and a token per user."""

    url: str
    station: Station
    tokens: dict[str, str]
    app: object

    def client(self, user: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, follow_redirects=False)


def serve(where: Station, **settings: object) -> Iterator[Served]:
    from flawscope.web import WebConfig, start_server

    config = WebConfig(
        audit_url=where.url,
        images=where.images,
        host="127.0.0.1",
        port=0,
        poll_s=0.1,
        **settings,  # type: ignore[arg-type]
    )
    running = start_server(config)
    try:
        tokens = {name: token_for(where.url, name) for name in USERS}
        yield Served(running.url, where, tokens, running.server.config.app)
    finally:
        running.stop()


@pytest.fixture
def served(station: Station) -> Iterator[Served]:
    yield from serve(station, categories=("scratch", "dent"))


def set_cookie(answer: httpx.Response, name: str) -> str:
    """The value a response sets for cookie ``name`` (read from the header: httpx keeps ``Secure``
    cookies away from plain-HTTP requests, where the browser, on 127.0.0.1, sends them)."""
    import re

    for header in answer.headers.get_list("set-cookie"):
        found = re.match(rf"{name}=([^;]*)", header)
        if found:
            return found[1].strip('"')
    raise AssertionError(f"no {name} cookie in {answer.headers.get_list('set-cookie')}")


def login(client: httpx.Client, user: str, password: str = PASSWORD) -> str:
    """Log in through the form, as a browser would; returns the session's CSRF token.

    The session cookie is then sent with every request of ``client``.
    """
    import re

    client.headers.pop("cookie", None)
    token = set_cookie(client.get("/login"), "flawscope_login")
    answer = client.post(
        "/login",
        data={"username": user, "password": password, "csrf_token": token, "next": "/"},
        headers={"cookie": f"flawscope_login={token}"},
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/", answer.headers.get("location")
    client.headers["cookie"] = f"flawscope_session={set_cookie(answer, 'flawscope_session')}"
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', dashboard.text)
    assert found
    return found[1]
