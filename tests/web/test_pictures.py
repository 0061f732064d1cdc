"""A large part is shown at display size, its heat layer small; the stored image on demand."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.web.conftest import BlobInspector, PartSource, Served, Station, add_users, serve

from flawscope.audit import AuditLog
from flawscope.line import run_line
from flawscope.web.imaging import DISPLAY_SIDE
from flawscope.web.pictures import HEAT_SIDE

WIDTH, HEIGHT = 2000, 1500


class LargeParts(PartSource):
    """The generated parts, enlarged to 2000 x 1500 px (a 3-megapixel camera)."""

    def _frames(self):  # type: ignore[no-untyped-def]
        for frame in super()._frames():
            big = cv2.resize(frame.image, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
            yield dataclasses.replace(frame, image=big)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("large")
    station = Station(f"sqlite:///{root / 'audit.db'}", root / "images", root)
    with AuditLog.open(station.url) as log:
        run_line(LargeParts(7, seed=3), BlobInspector(), log, station="st-1", store_images=station.images)
    add_users(station.url)
    yield from serve(station)


def _decoded(data: bytes) -> np.ndarray:
    picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert picture is not None
    return picture


def test_a_large_part_is_sent_at_display_size_and_in_full_on_demand(large: Served) -> None:
    with AuditLog.open(large.station.url, read_only=True) as log:
        flagged = [r for r in log.records() if r.kind == "inspection" and r.outcome.value != "pass"]
    assert flagged, "the generated parts should include some for review or failed"
    part = flagged[0]
    with large.client("alice") as api:
        shown = api.get(f"/parts/{part.seq}/image")
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/jpeg"
        assert _decoded(shown.content).shape[:2] == (round(HEIGHT * DISPLAY_SIDE / WIDTH), DISPLAY_SIDE)
        full = api.get(f"/parts/{part.seq}/image", params={"full": 1})
        assert full.status_code == 200
        assert full.content == Path(part.image_uri).read_bytes()  # the stored file, untouched
        assert len(shown.content) < len(full.content)
        heat = api.get(f"/parts/{part.seq}/heat.png")
        layer = _decoded(heat.content)
        assert layer.shape == (round(HEIGHT * HEAT_SIDE / WIDTH), HEAT_SIDE, 4)
        assert layer[:, :, 3].max() > 0  # the hot spot is in it
        page = api.get(f"/review/{part.seq}")
        assert f'href="/parts/{part.seq}/image?full=1"' in page.text
        assert f"{WIDTH} × {HEIGHT}" in page.text


def test_a_small_part_is_sent_as_stored_with_no_full_size_link(served: Served) -> None:
    with AuditLog.open(served.station.url, read_only=True) as log:
        part = next(r for r in log.records() if r.kind == "inspection" and r.outcome.value != "pass")
    with served.client("alice") as api:
        shown = api.get(f"/parts/{part.seq}/image")
        assert shown.content == Path(part.image_uri).read_bytes()
        assert "image?full=1" not in api.get(f"/review/{part.seq}").text


def _wait_idle(state: object, timeout_s: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not state.prerender.idle():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the pictures were not drawn ahead"
        time.sleep(0.05)


def test_queued_parts_heat_layers_are_drawn_ahead_and_served_as_drawn(served: Served) -> None:
    """The review band's heat layers are in memory before anyone asks (drawn when the app started
    or when the feed queued the part), and the page's request gets exactly those bytes."""
    state = served.app.state.web  # type: ignore[attr-defined]
    _wait_idle(state)
    with AuditLog.open(served.station.url, read_only=True) as log:
        records = [r for r in log.records() if r.kind == "inspection"]
    queued = [r for r in records if r.outcome.value == "review"]
    failed = [r for r in records if r.outcome.value == "fail"]
    assert queued and failed, "the generated parts should include some to review and some failed"
    for part in queued:
        assert state.review_pictures.has(("heat", part.seq)), part.seq
        assert not state.review_pictures.has(("image", part.seq))  # small PNGs are sent as stored
    assert not any(state.review_pictures.has(("heat", r.seq)) for r in failed)  # not queued
    made = state.review_pictures.made
    with served.client("alice") as api:
        for part in queued:
            heat = api.get(f"/parts/{part.seq}/heat.png")
            assert heat.status_code == 200
            assert heat.content == state.review_pictures.get(("heat", part.seq), bytes)
    assert state.review_pictures.made == made  # every one served from memory
    assert state.prerender.failed == 0


def test_a_flagged_large_part_is_drawn_when_flagged(large: Served) -> None:
    """A passed part (no map kept) flagged by an operator: its display-size JPEG is drawn at once."""
    state = large.app.state.web  # type: ignore[attr-defined]
    _wait_idle(state)
    with AuditLog.open(large.station.url, read_only=True) as log:
        part = [r for r in log.records() if r.kind == "inspection" and r.outcome.value == "pass"][-1]
    assert not state.review_pictures.has(("image", part.seq))
    drawn = state.prerender.drawn
    with large.client("alice") as api:
        flagged = api.post(f"/api/v1/inspections/{part.seq}/flag", json={"note": "look"})
        assert flagged.status_code in (200, 201), flagged.text
        _wait_idle(state)
        assert state.prerender.drawn == drawn + 1
        made = state.review_pictures.made
        shown = api.get(f"/parts/{part.seq}/image")
        assert shown.headers["content-type"] == "image/jpeg"
        assert shown.content == state.review_pictures.get(("image", part.seq), bytes)
    assert state.review_pictures.made == made  # served from memory, not drawn again
