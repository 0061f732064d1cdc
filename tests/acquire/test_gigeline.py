"""A GigE Vision camera in line-scan mode (Aravis's fake camera, a few lines per buffer) as a web."""

from __future__ import annotations

import threading

import numpy as np
from tests.acquire.test_gige import FakeCamera, fake_camera  # noqa: F401  (the fixture)

from flawscope.acquire import open_source


def test_line_buffers_arrive_as_consecutive_rows_and_assemble_into_frames(fake_camera: FakeCamera) -> None:  # noqa: F811
    uri = f"gigeline://{fake_camera.address}?lines=8&line_rate=1600&rows=400&frame=64&overlap=16&width=128"
    source = open_source(uri)
    guard = threading.Timer(30, source.close)
    guard.start()
    try:
        blocks = list(source.blocks())
    finally:
        guard.cancel()
    assert blocks, "no line buffer came"
    assert all(b.rows.shape[0] == 8 and b.rows.shape[1] == 128 for b in blocks)
    firsts = [b.first_row for b in blocks]
    assert firsts[0] == 0 and all(f % 8 == 0 for f in firsts) and firsts == sorted(firsts)
    assert blocks[-1].end_row >= 400

    source = open_source(uri)
    guard = threading.Timer(30, source.close)
    guard.start()
    try:
        frames = list(source)
    finally:
        guard.cancel()
    inspected = [f for f in frames if f.image is not None]
    assert inspected and all(f.image.shape == (64, 128) and f.image.dtype == np.uint8 for f in inspected)
    # Every row either lies in an inspected frame or in a stretch recorded as not inspected.
    end = max(int(f.meta["first_row"]) + int(f.meta["n_rows"]) for f in frames)
    covered = np.zeros(end, bool)
    for f in frames:
        first = int(f.meta["first_row"])
        covered[first : first + int(f.meta["n_rows"])] = True
    assert covered.all()
    assert source.assembly.rows_missing == sum(
        int(f.meta["n_rows"]) for f in frames if f.image is None and "not received" in (f.error or "")
    )
