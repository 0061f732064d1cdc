"""GigE Vision source against Aravis's fake GigE camera on 127.0.0.1."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from flawscope.acquire import open_source
from flawscope.acquire.gige import buffer_to_image, load_aravis
from flawscope.errors import InputError

FAKE = "arv-fake-gv-camera-0.8"


def _aravis():
    try:
        return load_aravis()
    except InputError as exc:
        pytest.skip(f"Aravis Python bindings not importable: {exc}")


class FakeCamera:
    """Aravis's fake GigE Vision camera process on the loopback interface."""

    address = "127.0.0.1"

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        arv = _aravis()
        self.process = subprocess.Popen(
            [FAKE, "-i", self.address], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = (
                    self.process.stderr.read().decode(errors="replace")[:300] if self.process.stderr else ""
                )
                pytest.skip(f"{FAKE} exited: {error}")
            try:
                arv.Camera.new(self.address)
                return
            except Exception:
                time.sleep(0.2)
        pytest.skip(f"{FAKE} did not answer on {self.address} within 10 s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def fake_camera() -> Iterator[FakeCamera]:
    _aravis()
    if shutil.which(FAKE) is None:
        pytest.skip(f"{FAKE} not installed (Debian package aravis-tools)")
    # One fake camera on the machine at a time: they all answer on GVCP's well-known port, and
    # make test runs test files side by side (this fixture is also test_gigeline's).
    with open(Path(tempfile.gettempdir()) / "flawscope-tests-gige.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        camera = FakeCamera()
        camera.start()
        try:
            yield camera
        finally:
            camera.stop()


def test_gige_frames_from_the_fake_camera(fake_camera: FakeCamera) -> None:
    source = open_source(f"gige://{fake_camera.address}?count=4&frame_rate=20")
    guard = threading.Timer(20, source.close)
    guard.start()
    try:
        frames = list(source)
    finally:
        guard.cancel()
    assert len(frames) == 4
    assert len({f.part_id for f in frames}) == 4
    for frame in frames:
        assert frame.error is None and frame.image is not None
        assert frame.image.dtype == np.uint8 and frame.image.ndim == 2 and min(frame.image.shape) >= 16
    ids = [int(f.meta["frame_id"]) for f in frames]
    assert ids == sorted(ids) or max(ids) > 60000  # increasing, unless the 16-bit counter wrapped
    assert source.incomplete == 0


def test_gige_reconnects_when_the_camera_restarts(fake_camera: FakeCamera) -> None:
    source = open_source(f"gige://{fake_camera.address}?count=12&frame_rate=20&timeout=0.3&backoff=0.2")
    guard = threading.Timer(40, source.close)
    guard.start()

    def power_cycle() -> None:
        fake_camera.stop()
        time.sleep(0.5)
        fake_camera.start()

    frames = []
    try:
        for frame in source:
            frames.append(frame)
            if len(frames) == 4:
                threading.Thread(target=power_cycle).start()
    finally:
        guard.cancel()
    assert len(frames) == 12, "the source gave up or was closed by the guard"
    assert source.reconnects == 1
    assert all(f.error is None for f in frames)
    assert len({f.part_id for f in frames}) == 12


def test_buffer_decoding_of_pixel_formats() -> None:
    arv = _aravis()
    mono16 = np.arange(12, dtype="<u2").reshape(3, 4)
    out = buffer_to_image(arv, mono16.tobytes(), 4, 3, arv.PIXEL_FORMAT_MONO_16)
    np.testing.assert_array_equal(out, mono16)
    bgr = np.zeros((3, 4, 3), np.uint8)
    bgr[:, :, 0] = 200  # blue
    rgb = buffer_to_image(arv, bgr.tobytes(), 4, 3, arv.PIXEL_FORMAT_BGR_8_PACKED)
    assert rgb[0, 0, 2] == 200 and rgb[0, 0, 0] == 0
    with pytest.raises(ValueError, match="not supported"):
        buffer_to_image(arv, b"\0" * 64, 4, 4, arv.PIXEL_FORMAT_YUV_422_PACKED)


@pytest.mark.parametrize("query", ["backoff=0", "backoff=5&max_backoff=1"])
def test_gige_refuses_bad_backoff_before_touching_aravis(query: str) -> None:
    # Checked first, so the message is the same with or without Aravis installed.
    with pytest.raises(InputError, match="backoff"):
        open_source(f"gige://127.0.0.1?{query}")
