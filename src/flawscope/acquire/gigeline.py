"""``gigeline://``: a GigE Vision line-scan camera through Aravis, its lines assembled into web frames.

A line-scan camera sends buffers of a few lines (its ``Height`` is the lines per buffer, 1-16
typically), one buffer per ``Height`` encoder pulses. The row index of a buffer's first line is
its frame id times the lines per buffer, counted from the first buffer of the run, so a buffer
that never arrived (a gap in the frame ids) or arrived incomplete is a gap of exactly its rows,
recorded as not inspected by the assembler. The camera is opened as :mod:`flawscope.acquire.gige`
opens area cameras (same Aravis bindings, same pixel formats).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from typing import Any
from urllib.parse import unquote

from flawscope.acquire.assembly import RowBlock
from flawscope.acquire.gige import buffer_to_image, load_aravis, start_streaming
from flawscope.acquire.registry import Option, SourceTarget, register_source
from flawscope.acquire.rows import RowSource, row_options
from flawscope.errors import InputError

logger = logging.getLogger(__name__)


class GigELineSource(RowSource):
    """Line buffers of a GigE Vision camera as row blocks (``lines`` rows per buffer).

    Args:
        device_id: Aravis device id or IP address (None: the first camera found).
        uri: URI reported in frames.
        lines: lines per buffer (the camera's ``Height``).
        width: pixels per line (None: the camera's full width).
        line_rate: buffers per second times ``lines`` (sets the camera's frame rate; None: as is).
        exposure_us: exposure time in µs (None: as configured).
        pixel_format: e.g. ``"Mono8"`` (None: as configured).
        rows: end after this many rows (None: never).
        timeout_s: how long to wait for a buffer before giving up on the camera.
        n_buffers: buffers queued to the stream.
        **options: frame assembly and geometry (``frame_rows``, ``overlap_rows``, ``mm_per_row``,
            ``mm_per_px``, ``roll``).

    Raises:
        InputError: when Aravis is missing or ``lines`` is out of range.
    """

    def __init__(
        self,
        device_id: str | None,
        *,
        uri: str,
        lines: int = 8,
        width: int | None = None,
        line_rate: float | None = None,
        exposure_us: float | None = None,
        pixel_format: str | None = None,
        rows: int | None = None,
        timeout_s: float = 2.0,
        n_buffers: int = 64,
        **options: Any,
    ) -> None:
        super().__init__(uri, **options)
        if not 1 <= lines <= 4096:
            raise InputError(f"{uri}: lines", f"must be 1-4096 lines per buffer, got {lines}")
        self.arv = load_aravis()
        self.device_id = device_id or None
        self.lines = lines
        self.width = width
        self.line_rate = line_rate
        self.exposure_us = exposure_us
        self.pixel_format = pixel_format
        self.max_rows = rows
        self.timeout_s = timeout_s
        self.n_buffers = n_buffers
        self.incomplete = 0

    def _open(self) -> tuple[Any, Any]:
        arv = self.arv
        try:
            camera = arv.Camera.new(self.device_id)
        except Exception as exc:
            raise InputError(self.uri, f"cannot open the camera ({exc})") from None
        if self.pixel_format:
            camera.set_pixel_format_from_string(self.pixel_format)
        x, y, full_width, _ = camera.get_region()
        camera.set_region(x, y, self.width or full_width, self.lines)
        if self.exposure_us is not None:
            camera.set_exposure_time(self.exposure_us)
        if self.line_rate is not None:
            camera.set_frame_rate(self.line_rate / self.lines)
        return camera, start_streaming(arv, camera, self.n_buffers)

    def _blocks(self) -> Generator[RowBlock, None, None]:
        arv = self.arv
        camera, stream = self._open()
        first_id: int | None = None
        delivered = 0
        try:
            while not self.stopping and (self.max_rows is None or delivered < self.max_rows):
                buffer = stream.timeout_pop_buffer(int(self.timeout_s * 1e6))
                if buffer is None:
                    self.connected = False
                    self.last_error = f"no line buffer within {self.timeout_s} s"
                    logger.warning("%s: %s; ending the web", self.uri, self.last_error)
                    return
                frame_id = int(buffer.get_frame_id())
                first_id = frame_id if first_id is None else first_id
                first_row = (frame_id - first_id) * self.lines
                try:
                    if buffer.get_status() != arv.BufferStatus.SUCCESS:
                        self.incomplete += 1  # its rows are a gap: the assembler records them
                        continue
                    rows = buffer_to_image(
                        arv,
                        buffer.get_data(),
                        buffer.get_image_width(),
                        buffer.get_image_height(),
                        buffer.get_image_pixel_format(),
                    )
                except ValueError as exc:
                    raise InputError(self.uri, str(exc)) from None
                finally:
                    stream.push_buffer(buffer)
                stamp = buffer.get_system_timestamp() / 1e9 or time.time()
                delivered = first_row + rows.shape[0]
                yield RowBlock(first_row, rows, stamp)
        finally:
            try:
                camera.stop_acquisition()
            except Exception as exc:
                logger.debug("stop_acquisition failed: %s", exc)


@register_source(
    "gigeline",
    options=row_options(
        lines=Option("lines", int),
        width=Option("width", int),
        line_rate=Option("line_rate", float),
        exposure_us=Option("exposure_us", float),
        pixel_format=Option("pixel_format", str),
        rows=Option("rows", int),
        timeout=Option("timeout_s", float),
        buffers=Option("n_buffers", int),
    ),
    example="gigeline://<device-id>?lines=8&line_rate=20000&mm_per_row=0.5&mm_per_px=0.5",
    summary="GigE Vision line-scan camera through Aravis",
)
def open_gigeline(target: SourceTarget, **options: Any) -> GigELineSource:
    """Open ``gigeline://DEVICE``."""
    return GigELineSource(unquote(target.netloc) or None, uri=target.uri, **options)
