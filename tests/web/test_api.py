"""The REST API and the pages' security against a live server on 127.0.0.1 (real HTTP, real SQLite)."""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from tests.web.conftest import BlobInspector, Served, login, set_cookie

from flawscope.audit import AuditLog
from flawscope.web.database import WebDB
from flawscope.web.events import list_events


def denials(served: Served) -> list[tuple[str, str, int]]:
    db = WebDB(served.station.url)
    try:
        return [(e.actor, e.target, e.detail["status"]) for e in list_events(db, action="denied", limit=500)]
    finally:
        db.close()


def head(served: Served) -> int:
    with AuditLog.open(served.station.url, read_only=True) as log:
        return log.head().seq


def test_nobody_gets_in_without_credentials_and_it_is_audited(served: Served) -> None:
    with served.client() as anonymous:
        answer = anonymous.get("/api/v1/inspections")
        assert answer.status_code == 401 and answer.json()["detail"] == "log in first"
        assert answer.headers["www-authenticate"] == "Bearer"
        page = anonymous.get("/review")
        assert page.status_code == 303 and page.headers["location"].startswith("/login?next=/review")
        bad = anonymous.get("/api/v1/me", headers={"authorization": "Bearer fst_nothing_real"})
        assert bad.status_code == 401 and "not valid" in bad.json()["detail"]
        assert anonymous.get("/parts/1/image").status_code == 303
    seen = denials(served)
    assert ("-", "/api/v1/inspections", 401) in seen and ("-", "/api/v1/me", 401) in seen


def test_an_event_stream_without_a_session_says_signed_out_in_its_own_format(served: Served) -> None:
    """A dashboard whose session lapsed gets an event it can act on (not a login page as HTML, which
    an EventSource cannot read and would reconnect to forever); the refusal is audited."""
    with served.client() as anonymous, anonymous.stream("GET", "/events/stream?after=3") as events:
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in events.iter_lines() if line]
    assert "event: signed-out" in lines and "event: update" not in lines
    data = next(line for line in lines if line.startswith("data: "))
    assert json.loads(data.removeprefix("data: ")) == {"login": "/login?next=/"}
    assert ("-", "/events/stream", 401) in denials(served)


def test_roles_are_enforced_and_refusals_audited(served: Served) -> None:
    with (
        served.client("alice") as operator,
        served.client("erin") as engineer,
        served.client("root") as admin,
    ):
        assert operator.get("/api/v1/me").json() == {"username": "alice", "role": "operator", "via": "token"}
        refused = operator.get("/api/v1/users")
        assert refused.status_code == 403 and "admin role" in refused.json()["detail"]
        assert engineer.get("/api/v1/users").status_code == 403
        assert operator.get("/settings", headers={"accept": "text/html"}).status_code == 403
        assert engineer.get("/settings").status_code == 200
        assert admin.get("/api/v1/users").status_code == 200
        olga = {"username": "olga", "password": "long enough", "role": "operator"}
        made = admin.post("/api/v1/users", json=olga)
        assert made.status_code == 201, made.text
        again = admin.post("/api/v1/users", json=olga)
        assert again.status_code == 409 and "already exists" in again.json()["detail"]
        assert admin.patch("/api/v1/users/olga", json={"role": "engineer"}).json()["role"] == "engineer"
        assert admin.patch("/api/v1/users/nobody", json={"role": "engineer"}).status_code == 404
    seen = denials(served)
    assert ("alice", "/api/v1/users", 403) in seen and ("erin", "/api/v1/users", 403) in seen


def test_browser_forms_need_their_session_csrf_token(served: Served) -> None:
    target = next(i["inspection"]["seq"] for i in served.client("alice").get("/api/v1/queue").json()["items"])
    with httpx.Client(base_url=served.url, follow_redirects=False) as browser:
        first = login(browser, "alice")
        body = {"ref_seq": target, "verdict": "good"}
        assert browser.post("/api/v1/reviews", json=body).status_code == 403  # no token
        # Log out and in again: a form from the old session is stale.
        assert browser.post("/logout", data={"csrf_token": first}).status_code == 303
        second = login(browser, "alice")
        stale = browser.post("/api/v1/reviews", json=body, headers={"x-csrf-token": first})
        assert stale.status_code == 403 and "CSRF" in stale.json()["detail"]
        form = browser.post(
            f"/review/{target}", data={"verdict": "good", "request_id": "stale-form-1", "csrf_token": first}
        )
        assert form.status_code == 403
        ok = browser.post("/api/v1/reviews", json=body, headers={"x-csrf-token": second})
        assert ok.status_code == 201 and ok.json()["reviewer"] == "alice"
    assert ("alice", "/api/v1/reviews", 403) in denials(served)


def test_login_failures_are_audited_and_limited(served: Served) -> None:
    with httpx.Client(base_url=served.url, follow_redirects=False) as browser:
        token = set_cookie(browser.get("/login"), "flawscope_login")
        browser.headers["cookie"] = f"flawscope_login={token}"
        for _ in range(5):
            wrong = browser.post(
                "/login", data={"username": "erin", "password": "wrong!", "csrf_token": token}
            )
            assert wrong.status_code == 303 and "error=" in wrong.headers["location"]
        right = {"username": "erin", "password": "correct horse battery", "csrf_token": token}
        assert browser.post("/login", data=right).status_code == 429
        forged = browser.post("/login", data={**right, "username": "alice", "csrf_token": "x"})
        assert forged.status_code == 303 and "expired" in forged.headers["location"].replace("%20", " ")
    db = WebDB(served.station.url)
    try:
        assert len(list_events(db, action="login_failed", limit=50)) >= 5
    finally:
        db.close()


def test_inspections_are_filtered_and_paged_in_sql(served: Served) -> None:
    with served.client("alice") as api, AuditLog.open(served.station.url, read_only=True) as log:
        fails = [r.seq for r in log.records() if r.kind == "inspection" and r.outcome.value == "fail"]
        seen, cursor = [], None
        while True:
            params = {"outcome": "fail", "limit": 3, **({"before_seq": cursor} if cursor else {})}
            page = api.get("/api/v1/inspections", params=params).json()
            seen += [item["seq"] for item in page["items"]]
            assert all(item["outcome"] == "fail" for item in page["items"])
            cursor = page["next_before_seq"]
            if cursor is None:
                break
        assert seen == sorted(fails, reverse=True)
        both = api.get(
            "/api/v1/inspections", params=[("outcome", "fail"), ("outcome", "review"), ("limit", 500)]
        )
        assert len(both.json()["items"]) == sum(
            1 for r in log.records() if r.kind == "inspection" and r.outcome.value in ("fail", "review")
        )
        assert api.get("/api/v1/inspections", params={"camera": "test://none"}).json()["items"] == []
        assert api.get("/api/v1/inspections", params={"limit": 0}).status_code == 422
        assert api.get("/api/v1/inspections", params={"outcome": "great"}).status_code == 422
        assert api.get("/api/v1/inspections/99999").status_code == 404
        stats = api.get("/api/v1/stats").json()
        assert stats["total"]["counts"]["fail"] == len(fails)
        assert stats["by_camera"]["test://cam-1"]["n"] == stats["total"]["n"]


def test_reviews_through_the_api_are_idempotent_and_checked(served: Served) -> None:
    with served.client("alice") as api:
        queue = api.get("/api/v1/queue").json()
        target = queue["items"][0]["inspection"]["seq"]
        body = {"ref_seq": target, "verdict": "defect", "category": "scratch", "request_id": "api-review-01",
                "regions": [[[0.1, 0.1], [0.4, 0.1], [0.4, 0.3]]]}  # fmt: skip
        first = api.post("/api/v1/reviews", json=body)
        assert first.status_code == 201, first.text
        again = api.post("/api/v1/reviews", json=body)
        assert again.status_code == 200 and again.json()["seq"] == first.json()["seq"]
        assert first.json()["mask"].startswith("reviews/") and first.json()["n_regions"] == 1
        mask = api.get(f"/store/{first.json()['mask']}")
        assert mask.status_code == 200 and mask.headers["content-type"] == "image/png"
        before = head(served)
        missing = api.post("/api/v1/reviews", json={"ref_seq": 99999, "verdict": "good"})
        assert missing.status_code == 404 and "no inspection 99999" in missing.json()["detail"]
        stale = api.post(
            "/api/v1/reviews", json={"ref_seq": target, "verdict": "good", "known_review_seq": 0}
        )
        assert stale.status_code == 409 and "by alice" in stale.json()["detail"]
        for wrong in (
            {"category": "../x"},
            {"category": "good"},
            {"verdict": "maybe"},
            {"regions": [[[0, 0], [2, 0], [1, 1]]]},
        ):
            bad = api.post("/api/v1/reviews", json={"ref_seq": target, "verdict": "defect", **wrong})
            assert bad.status_code == 422, (wrong, bad.text)
        assert head(served) == before
        listed = api.get("/api/v1/reviews", params={"reviewer": "alice", "verdict": "defect"}).json()["items"]
        assert first.json()["seq"] in [r["seq"] for r in listed]
        assert target not in [i["inspection"]["seq"] for i in api.get("/api/v1/queue").json()["items"]]
        flagged = api.post(f"/api/v1/inspections/{target}/flag", json={"note": "second look"})
        assert flagged.status_code == 201 and flagged.json()["reason"] == "flagged"
        assert api.post(f"/api/v1/inspections/{target}/flag", json={}).status_code == 200
        assert api.post("/api/v1/inspections/99999/flag", json={}).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/store/%2e%2e/audit.db",
        "/store/..%2f..%2fetc/passwd",
        "/store/%2fetc%2fpasswd",
        "/store/x/%2e%2e/%2e%2e/audit.db",
    ],
)
def test_paths_cannot_leave_the_image_store(served: Served, path: str) -> None:
    with served.client("alice") as api:
        answer = api.get(path)
        assert answer.status_code == 400 and "image store" in answer.text, answer.text
        assert b"SQLite" not in answer.content and b"root:" not in answer.content


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A grayscale PNG of zeros: tiny on disk, width x height bytes decoded (``rows``: only so many)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)
    data = b"".join(packer.compress(row) for _ in range(height if rows is None else rows)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


@pytest.fixture
def inspecting(served: Served) -> Iterator[Served]:
    state = served.app.state.web  # type: ignore[attr-defined]
    state.inspector = BlobInspector()
    yield served
    state.inspector = None


def test_uploads_are_judged_recorded_or_refused(inspecting: Served) -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(60, 110, (64, 80), dtype=np.uint8)
    _, png = cv2.imencode(".png", image)
    with inspecting.client("alice") as api:
        before = head(inspecting)
        judged = api.post(
            "/api/v1/inspect",
            files={"file": ("part.png", png.tobytes(), "image/png")},
            data={"part_id": "p-77"},
        )
        assert judged.status_code == 200, judged.text
        verdict = judged.json()
        assert verdict["outcome"] == "pass" and verdict["seq"] == before + 1
        record = api.get(f"/api/v1/inspections/{verdict['seq']}").json()
        assert record["part_id"] == "p-77" and record["camera"] == "api://alice" and record["has_image"]
        refusals = {
            "notes.txt": b"this is not an image",
            "empty.png": b"",
            "huge.png": bytes(21 * 1024 * 1024),
            "bomb.png": png_bomb(8000, 8000),
            "lying.png": png_bomb(40000, 40000, rows=10),
            "tiny.png": cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes(),
        }
        expected = {
            "notes.txt": "not an image",
            "empty.png": "empty",
            "huge.png": "at most",
            "bomb.png": "megapixels",
            "lying.png": "megapixels",
            "tiny.png": "at least",
        }
        for name, data in refusals.items():
            answer = api.post("/api/v1/inspect", files={"file": (name, data, "image/png")})
            assert answer.status_code == 422, (name, answer.text)
            assert name in answer.json()["detail"] and expected[name] in answer.json()["detail"], answer.text
        assert head(inspecting) == before + 1  # nothing recorded for a refused file
        batch = api.post(
            "/api/v1/inspect/batch",
            files=[
                ("files", ("a.png", png.tobytes(), "image/png")),
                ("files", ("b.txt", b"nope", "text/plain")),
            ],
        )
        assert batch.status_code == 200
        results = batch.json()
        assert results[0]["seq"] == before + 2 and results[0]["error"] is None
        assert results[1]["seq"] is None and "not an image" in results[1]["error"]
        inspecting.app.state.web.inspector = None  # type: ignore[attr-defined]
        none = api.post("/api/v1/inspect", files={"file": ("part.png", png.tobytes(), "image/png")})
        assert none.status_code == 503 and "without --bundle" in none.json()["detail"]
    assert head(inspecting) == before + 2


def test_pages_use_no_outside_assets_and_send_security_headers(served: Served) -> None:
    with httpx.Client(base_url=served.url, follow_redirects=False) as browser:
        login(browser, "alice")
        for path in ("/", "/review", "/inspections", "/parts/3", "/account"):
            page = browser.get(path)
            assert page.status_code == 200, path
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert page.headers["x-frame-options"] == "DENY"
            linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
            assert linked and all(link.startswith(("/", "#")) for link in linked), (path, linked)
        for asset in ("/static/app.css", "/static/dashboard.js", "/static/review.js", "/static/charts.js"):
            assert browser.get(asset).status_code == 200
        assert browser.get("/api/docs").status_code == 404  # FastAPI's docs page pulls scripts from a CDN
        schema = browser.get("/api/openapi.json").json()
        assert "/api/v1/reviews" in schema["paths"] and "/api/v1/inspect" in schema["paths"]


def test_assets_have_content_hashed_names_and_are_kept_for_a_year(served: Served) -> None:
    import hashlib

    with httpx.Client(base_url=served.url, follow_redirects=False) as browser:
        login(browser, "alice")
        page = browser.get("/").text
        linked = re.findall(r'(?:src|href)="(/assets/[^"]+)"', page)
        assert {link.split("/")[-1].split(".")[0] for link in linked} >= {
            "app", "nav", "charts", "viewer", "dashboard", "review", "favicon"
        }  # fmt: skip
        for link in linked:
            answer = browser.get(link)
            assert answer.status_code == 200, link
            assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
            digest = link.split(".")[-2]
            assert hashlib.sha256(answer.content).hexdigest()[:12] == digest  # the name is the content's
        assert 'name="flawscope-assets" content="' in page
        assert browser.get("/assets/app.000000000000.css").status_code == 404  # an old version
        assert browser.get("/assets/..%2Fapp.py").status_code == 404


def test_the_app_listens_on_loopback_by_default(served: Served) -> None:
    from flawscope.web import WebConfig

    assert WebConfig(audit_url="sqlite:///x.db", images=served.station.images).host == "127.0.0.1"
    assert served.url.startswith("http://127.0.0.1:")
    cookie_page = httpx.get(served.url + "/login")
    assert "HttpOnly" in cookie_page.headers["set-cookie"] and "Secure" in cookie_page.headers["set-cookie"]
    assert "samesite=strict" in cookie_page.headers["set-cookie"].lower()


def test_sinks_show_their_backlog_from_the_audit_database(served: Served) -> None:
    from flawscope.integrate.cursors import CursorStore

    cursors = CursorStore(served.station.url)
    try:
        cursors.start("mes-webhook", 10)
        cursors.start("plc", 5)
        cursors.disable("plc", "PLC never acknowledged result 7")
    finally:
        cursors.close()
    head_seq = head(served)
    state = served.app.state.web  # type: ignore[attr-defined]
    state.feed.sinks.min_interval_s = 0.0
    with served.client("alice") as api:
        sinks = {s["name"]: s for s in api.get("/api/v1/sinks").json()}
    assert sinks["mes-webhook"]["backlog"] == head_seq - 10 and sinks["mes-webhook"]["state"] == "delivering"
    assert sinks["plc"]["state"] == "disabled" and "never acknowledged" in sinks["plc"]["last_error"]


def test_a_part_whose_image_is_gone_can_still_be_reviewed(served: Served) -> None:
    with served.client("alice") as api, AuditLog.open(served.station.url, read_only=True) as log:
        passed = [r for r in log.records() if r.kind == "inspection" and r.outcome.value == "pass"][-1]
        Path(passed.image_uri).unlink()
        page = api.get(f"/review/{passed.seq}")
        assert page.status_code == 200 and "no longer in the image store" in page.text
        missing = api.get(f"/parts/{passed.seq}/image", headers={"accept": "application/json"})
        assert missing.status_code == 404 and "no longer in the image store" in missing.json()["detail"]
        review = api.post("/api/v1/reviews", json={"ref_seq": passed.seq, "verdict": "good"})
        assert review.status_code == 201
        drawn = api.post(
            "/api/v1/reviews",
            json={"ref_seq": passed.seq, "verdict": "defect", "regions": [[[0, 0], [1, 0], [1, 1]]],
                  "known_review_seq": review.json()["seq"]},
        )  # fmt: skip
        assert drawn.status_code == 422 and "cannot draw on this part" in drawn.json()["detail"]
