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
