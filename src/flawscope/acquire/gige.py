"""GigE Vision (and USB3 Vision) cameras through Aravis.

Aravis is a C library with GObject introspection bindings: install the Debian/Ubuntu packages
``gir1.2-aravis-0.8`` (and ``aravis-tools`` for ``arv-tool-0.8``/``arv-fake-gv-camera-0.8``) and
the Python package ``PyGObject`` (``pip install PyGObject``, which needs ``libgirepository1.0-dev``
and ``libcairo2-dev`` to build).

Every buffer the camera sends is a part: an incomplete buffer (missing packets, timeout) becomes an
error frame, so the part is rejected rather than skipped. Gaps in the camera's frame ids (frames
the camera sent that never arrived) are counted in :attr:`Source.missed`. When the camera stops
answering, it is reopened with exponential backoff, like a dropped video stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import cv2
import numpy as np

from flawscope.acquire.base import Source, backoff_delays, check_backoff
from flawscope.acquire.registry import Option, SourceTarget, register_source
from flawscope.errors import InputError
from flawscope.types import Frame

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "GigE Vision needs Aravis: apt-get install gir1.2-aravis-0.8 aravis-tools libgirepository1.0-dev "
    "libcairo2-dev, then pip install PyGObject"
)
# Frame-id jumps larger than this are a camera restart or a counter wrap, not lost frames.
_MAX_GAP = 10_000


def load_aravis() -> Any:
    """Import the Aravis bindings.

    Raises:
        InputError: with what to install when they are missing.
    """
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as exc:
        raise InputError("gige://", f"{INSTALL_HINT} ({exc})") from None
    return Aravis


def _bayer_codes(arv: Any) -> dict[int, int]:
    return {
        arv.PIXEL_FORMAT_BAYER_RG_8: cv2.COLOR_BayerRG2RGB,
        arv.PIXEL_FORMAT_BAYER_GB_8: cv2.COLOR_BayerGB2RGB,
        arv.PIXEL_FORMAT_BAYER_GR_8: cv2.COLOR_BayerGR2RGB,
        arv.PIXEL_FORMAT_BAYER_BG_8: cv2.COLOR_BayerBG2RGB,
    }


def start_streaming(arv: Any, camera: Any, n_buffers: int) -> Any:
    """Put a configured camera in continuous acquisition with ``n_buffers`` queued; its stream."""
    camera.set_acquisition_mode(arv.AcquisitionMode.CONTINUOUS)
    stream = camera.create_stream(None, None)
    payload = camera.get_payload()
    for _ in range(n_buffers):
        stream.push_buffer(arv.Buffer.new_allocate(payload))
    camera.start_acquisition()
    return stream


def buffer_to_image(arv: Any, data: bytes, width: int, height: int, pixel_format: int) -> np.ndarray:
    """Decode a camera buffer's payload to an image array.

    Returns:
        ``(H, W)`` uint8/uint16 for mono formats, ``(H, W, 3)`` uint8 RGB for colour ones.

    Raises:
        ValueError: for a pixel format flawscope does not decode, or a payload of the wrong size.
    """
    raw = np.frombuffer(data, np.uint8)
    if pixel_format == arv.PIXEL_FORMAT_MONO_8:
        return raw[: width * height].reshape(height, width).copy()
    if pixel_format in (arv.PIXEL_FORMAT_MONO_10, arv.PIXEL_FORMAT_MONO_12, arv.PIXEL_FORMAT_MONO_16):
        return np.frombuffer(data, "<u2")[: width * height].reshape(height, width).copy()
    if pixel_format == arv.PIXEL_FORMAT_RGB_8_PACKED:
        return raw[: width * height * 3].reshape(height, width, 3).copy()
    if pixel_format == arv.PIXEL_FORMAT_BGR_8_PACKED:
        return cv2.cvtColor(raw[: width * height * 3].reshape(height, width, 3), cv2.COLOR_BGR2RGB)
    code = _bayer_codes(arv).get(pixel_format)
    if code is not None:
        return cv2.cvtColor(raw[: width * height].reshape(height, width), code)
    raise ValueError(
        f"pixel format 0x{pixel_format:08x} is not supported (use Mono8/16, RGB8, BGR8 or Bayer 8)"
    )


class GigESource(Source):
    """Frames of a GigE Vision camera, free-running or triggered, until closed (or ``count`` parts).

    Args:
        device_id: Aravis device id (``arv-tool-0.8`` lists them), serial or IP address; None: the
            first camera found.
        uri: URI to report in frames.
        count: end after this many parts (None: never).
        frame_rate: set the camera's acquisition frame rate (None: leave as configured).
        exposure_us: set the exposure time in µs (None: leave as configured).
        pixel_format: set the pixel format by name, e.g. ``"Mono8"`` (None: leave as configured).
        timeout_s: how long to wait for a buffer before checking that the camera still answers.
        n_buffers: buffers queued to the stream.
        backoff_s: first wait before reconnecting; doubles on each failed attempt.
        max_backoff_s: longest wait between attempts.
        max_retries: failed attempts in a row before giving up (None: never give up).

    Raises:
        InputError: when Aravis is not installed.
    """

    def __init__(
        self,
        device_id: str | None,
        *,
        uri: str,
        count: int | None = None,
        frame_rate: float | None = None,
        exposure_us: float | None = None,
        pixel_format: str | None = None,
        timeout_s: float = 2.0,
        n_buffers: int = 8,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_retries: int | None = None,
    ) -> None:
        super().__init__(uri)
        check_backoff(uri, backoff_s, max_backoff_s)
        self.arv = load_aravis()
        self.device_id = device_id or None
        self.count = count
        self.frame_rate = frame_rate
        self.exposure_us = exposure_us
        self.pixel_format = pixel_format
        self.timeout_s = timeout_s
        self.n_buffers = n_buffers
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retries = max_retries
        self.incomplete = 0
        self._control_lost = threading.Event()

    def _connect(self) -> tuple[Any, Any]:
        """Open the camera, configure it, queue buffers and start acquiring."""
        arv = self.arv
        camera = arv.Camera.new(self.device_id)
        # Aravis's heartbeat notices a camera that was power-cycled or taken over by another host;
        # a register read alone would not (a restarted camera answers reads but streams nothing).
        self._control_lost.clear()
        camera.get_device().connect("control-lost", lambda *_: self._control_lost.set())
        if self.pixel_format:
            camera.set_pixel_format_from_string(self.pixel_format)
        if self.exposure_us is not None:
            camera.set_exposure_time(self.exposure_us)
        if self.frame_rate is not None:
            camera.set_frame_rate(self.frame_rate)
        stream = start_streaming(arv, camera, self.n_buffers)
        logger.info("%s: %s %s acquiring", self.uri, camera.get_vendor_name(), camera.get_model_name())
        return camera, stream

    def _reconnect(self) -> tuple[Any, Any] | None:
        down_since = time.monotonic()
        for attempts, delay in enumerate(backoff_delays(self.backoff_s, self.max_backoff_s), start=1):
            try:
                connected = self._connect()
            except Exception as exc:
                self.connected = False
                self.last_error = f"cannot open the camera ({exc})"
                if self.max_retries is not None and attempts >= self.max_retries:
                    problem = f"camera unreachable after {attempts} attempts ({exc})"
                    self.last_error = problem
                    raise InputError(self.uri, problem) from None
                logger.warning("%s: cannot open the camera (%s); next try in %.1f s", self.uri, exc, delay)
            else:
                self.connected = True
                if attempts > 1 or self.reconnects or self.missed:
                    logger.warning("%s: camera back after %.1f s", self.uri, time.monotonic() - down_since)
                return connected
            if self._wait(delay):
                return None
        return None  # not reached: the delays never run out

    @staticmethod
    def _stop_camera(camera: Any) -> None:
        try:
            camera.stop_acquisition()
        except Exception as exc:
            logger.debug("stop_acquisition failed: %s", exc)

    def _alive(self, camera: Any) -> bool:
        if self._control_lost.is_set():
            return False
        try:
            camera.get_payload()  # a register read: raises when the control channel is lost
        except Exception:
            return False
        return True

    def _frame(self, buffer: Any, part_id: str) -> Frame:
        arv = self.arv
        meta = {"frame_id": str(buffer.get_frame_id()), "device": str(self.device_id or "")}
        stamp = buffer.get_system_timestamp() / 1e9 or time.time()
        status = buffer.get_status()
        if status != arv.BufferStatus.SUCCESS:
            self.incomplete += 1
            error = f"incomplete camera buffer ({status.value_nick})"
            return Frame(part_id, None, stamp, self.uri, meta, error=error)
        try:
            image = buffer_to_image(
                arv,
                buffer.get_data(),
                buffer.get_image_width(),
                buffer.get_image_height(),
                buffer.get_image_pixel_format(),
            )
        except ValueError as exc:
            return Frame(part_id, None, stamp, self.uri, meta, error=str(exc))
        return Frame(part_id, image, stamp, self.uri, meta)

    def _frames(self) -> Generator[Frame, None, None]:
        session = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        prefix = "".join(c if c.isalnum() else "_" for c in (self.device_id or "gige"))
        connected = self._reconnect()
        emitted = 0
        last_id: int | None = None
        try:
            while connected is not None and not self.stopping:
                camera, stream = connected
                buffer = stream.timeout_pop_buffer(int(self.timeout_s * 1e6))
                if buffer is None:
                    if self._alive(camera):
                        continue  # a triggered camera waiting for the next part
                    logger.warning("%s: camera stopped answering; reconnecting", self.uri)
                    self._stop_camera(camera)
                    # Let go of the old device first: disposing of it later stalls the new stream.
                    camera = stream = connected = None
                    self.reconnects += 1
                    last_id = None
                    connected = self._reconnect()
                    continue
                frame_id = int(buffer.get_frame_id())
                if last_id is not None and 0 < frame_id - last_id - 1 < _MAX_GAP:
                    self.missed += frame_id - last_id - 1
                last_id = frame_id
                emitted += 1
                frame = self._frame(buffer, f"{prefix}-{session}-{emitted:06d}")
                stream.push_buffer(buffer)  # the image was copied out; give the buffer back
                yield frame
                if self.count is not None and emitted >= self.count:
                    return
        finally:
            if connected is not None:
                self._stop_camera(connected[0])


@register_source(
    "gige",
    options={
        "count": Option("count", int),
        "frame_rate": Option("frame_rate", float),
        "exposure_us": Option("exposure_us", float),
        "pixel_format": Option("pixel_format", str),
        "timeout": Option("timeout_s", float),
        "buffers": Option("n_buffers", int),
        "backoff": Option("backoff_s", float),
        "max_backoff": Option("max_backoff_s", float),
        "retries": Option("max_retries", int),
    },
    example="gige://<device-id>?frame_rate=10",
    summary="GigE Vision camera through Aravis",
)
def open_gige(target: SourceTarget, **options: Any) -> GigESource:
    """Open ``gige://DEVICE`` (``gige://`` alone: the first camera found)."""
    return GigESource(unquote(target.netloc) or None, uri=target.uri, **options)
