"""Video files, RTSP streams and USB cameras through OpenCV's ``VideoCapture``.

A video file is read to its end once. A live stream (RTSP, USB) that drops is reopened with
exponential backoff, for as long as it takes (or ``max_retries`` attempts); the frames lost while
it was down are estimated from the stream's frame rate, counted in :attr:`Source.missed` and
reported in the ``missed_before`` metadata of the first frame after it came back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flawscope.acquire.base import Source, backoff_delays, check_backoff
from flawscope.acquire.registry import Option, SourceTarget, register_source
from flawscope.errors import InputError
from flawscope.types import Frame

logger = logging.getLogger(__name__)

#: Builds a capture for a target (file path, URL or camera index): ``cv2.VideoCapture`` by default.
CaptureFactory = Callable[[str | int], Any]


def open_capture(target: str | int) -> Any:
    """A ``cv2.VideoCapture``; network streams get open/read timeouts so that a drop is noticed."""
    if isinstance(target, str) and "://" in target:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
    return cv2.VideoCapture(target)


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3 and frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    if frame.ndim == 3 and frame.shape[2] == 1:
        return frame[:, :, 0]
    return frame


class VideoSource(Source):
    """Frames of a video file, an RTSP stream or a USB camera; every ``every``-th frame is a part.

    Args:
        target: file path, stream URL or camera index.
        uri: URI to report in frames.
        live: a stream (reconnect when it drops) rather than a file (end at its last frame).
        fps: nominal frame rate, to count frames missed while down (default: what the stream says).
        every: take one frame in this many (the others are not parts; they are counted as skipped).
        count: end after this many parts (None: at the end of the file / never for a stream).
        backoff_s: first wait before reconnecting; doubles on each failed attempt.
        max_backoff_s: longest wait between attempts.
        max_retries: failed attempts in a row before giving up (None: never give up).
        prefix: part ids are ``<prefix>-<frame index>`` (a live stream adds the session's start time).
        capture_factory: builds the capture (tests inject one; default :func:`open_capture`).

    Raises:
        InputError: when a video file does not exist or cannot be decoded, or a setting is invalid.
    """

    def __init__(
        self,
        target: str | int,
        *,
        uri: str,
        live: bool,
        fps: float | None = None,
        every: int = 1,
        count: int | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_retries: int | None = None,
        prefix: str | None = None,
        capture_factory: CaptureFactory | None = None,
    ) -> None:
        super().__init__(uri)
        if every < 1:
            raise InputError(f"{uri}: every", f"must be at least 1, got {every}")
        if count is not None and count < 1:
            raise InputError(f"{uri}: count", f"must be at least 1, got {count}")
        check_backoff(uri, backoff_s, max_backoff_s)
        self.target = target
        self.live = live
        self.fps = fps
        self.every = every
        self.count = count
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retries = max_retries
        self.skipped = 0
        self.factory = capture_factory or open_capture
        if prefix is None:
            prefix = Path(target).stem if isinstance(target, str) and not live else _default_prefix(target)
        self.prefix = prefix
        if not live:
            self._probe_file()

    def _probe_file(self) -> None:
        path = Path(str(self.target))
        if not path.is_file():
            raise InputError(path, "video file does not exist")
        capture = self.factory(str(path))
        try:
            if not capture.isOpened():
                raise InputError(path, "OpenCV cannot open this video (unknown container or codec)")
        finally:
            capture.release()

    def _open(self) -> Any | None:
        capture = self.factory(self.target)
        if capture is not None and capture.isOpened():
            return capture
        if capture is not None:
            capture.release()
        return None

    def _reconnect(self, down_since: float, fps: float) -> Any:
        """Reopen a dropped stream with exponential backoff; None when closed or out of retries."""
        for attempts, delay in enumerate(backoff_delays(self.backoff_s, self.max_backoff_s), start=1):
            if self._wait(delay):
                return None
            capture = self._open()
            if capture is not None:
                down = time.monotonic() - down_since
                missed = round(down * fps) if fps > 0 else 0
                self.missed += missed
                self.reconnects += 1
                self.connected = True
                message = "%s: back after %.1f s down (%d attempts); ~%d frames missed"
                logger.warning(message, self.uri, down, attempts, missed)
                return capture
            if self.max_retries is not None and attempts >= self.max_retries:
                self.last_error = f"stream lost; gave up after {attempts} reconnection attempts"
                raise InputError(self.uri, self.last_error)
            logger.warning("%s: cannot reconnect (attempt %d); trying again", self.uri, attempts)
        return None  # not reached: the delays never run out

    def _frames(self) -> Generator[Frame, None, None]:
        session = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        capture = self._open()
        if capture is None and not self.live:
            raise InputError(self.target, "OpenCV cannot open this video")
        index = emitted = 0
        missed_before = 0
        try:
            if capture is None:
                capture = self._reconnect(time.monotonic(), self.fps or 0.0)
            while capture is not None and not self.stopping:
                ok, image = capture.read()
                if not ok or image is None:
                    if not self.live:
                        return
                    fps = self.fps or float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
                    logger.warning("%s: stream dropped; reconnecting", self.uri)
                    self.connected = False
                    self.last_error = "stream dropped; reconnecting"
                    capture.release()
                    before = self.missed
                    capture = self._reconnect(time.monotonic(), fps)
                    missed_before += self.missed - before
                    continue
                index += 1
                if (index - 1) % self.every:
                    self.skipped += 1
                    continue
                part = f"{self.prefix}-{session}-{index:06d}" if self.live else f"{self.prefix}-{index:06d}"
                meta = {"frame_index": str(index)}
                if missed_before:
                    meta["missed_before"] = str(missed_before)
                    missed_before = 0
                yield Frame(part, _to_rgb(image), time.time(), self.uri, meta)
                emitted += 1
                if self.count is not None and emitted >= self.count:
                    return
        finally:
            if capture is not None:
                capture.release()


def _default_prefix(target: str | int) -> str:
    if isinstance(target, int):
        return f"usb{target}"
    text = str(target).split("://", 1)[-1].split("@")[-1]
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")[:40] or "stream"


_STREAM = {
    "fps": Option("fps", float),
    "every": Option("every", int),
    "count": Option("count", int),
    "backoff": Option("backoff_s", float),
    "max_backoff": Option("max_backoff_s", float),
    "retries": Option("max_retries", int),
    "prefix": Option("prefix", str),
}


@register_source(
    "video",
    path=True,
    options={k: v for k, v in _STREAM.items() if k in ("every", "count", "prefix")},
    example="video:///data/run.mp4?every=5",
    summary="frames of a video file",
)
def open_video(target: SourceTarget, **options: Any) -> VideoSource:
    """Open ``video:///file``."""
    return VideoSource(target.location, uri=target.uri, live=False, **options)


@register_source(
    "rtsp",
    "rtsps",
    own_query=True,
    example="rtsp://user:pw@10.0.0.5/stream",
    summary="RTSP stream (reconnects when it drops)",
)
def open_rtsp(target: SourceTarget, **options: Any) -> VideoSource:
    """Open an RTSP URL; its query string is the camera's (give flawscope's options as keywords)."""
    return VideoSource(target.uri, uri=target.uri, live=True, **options)


@register_source("usb", options=_STREAM, example="usb://0?fps=30", summary="USB camera (reconnects)")
def open_usb(target: SourceTarget, **options: Any) -> VideoSource:
    """Open ``usb://N``."""
    try:
        index = int(target.netloc or "0")
    except ValueError:
        problem = f"usb:// needs a camera index (usb://0), got {target.netloc!r}"
        raise InputError(target.uri, problem) from None
    return VideoSource(index, uri=target.uri, live=True, **options)
