"""``webvideo://``: a video file of a moving web, each video frame a block of consecutive rows.

A line-scan recording kept as video (or an area camera looking at a web moving exactly one
frame height per frame) is read frame by frame with OpenCV; frame ``k`` holds rows
``k * H`` to ``(k + 1) * H - 1``. ``rows=`` keeps only the first rows of each frame (a band
of an area camera's image). A frame the decoder cannot read is a gap of its rows, recorded as
not inspected by the assembler.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flawscope.acquire.assembly import RowBlock
from flawscope.acquire.registry import Option, SourceTarget, register_source
from flawscope.acquire.rows import RowSource, row_options
from flawscope.acquire.video import _to_rgb
from flawscope.errors import InputError


def _grey(pixels: np.ndarray) -> bool:
    """True when the three channels differ by at most a codec's rounding (3 grey levels)."""
    wide = pixels.astype(np.int16)
    return bool(
        np.abs(wide[..., 0] - wide[..., 1]).max() <= 3 and np.abs(wide[..., 1] - wide[..., 2]).max() <= 3
    )


class WebVideoSource(RowSource):
    """Rows of a video file, one block per video frame.

    Args:
        path: the video file.
        uri: URI reported in frames.
        rows: rows taken from the top of each video frame (None: all of them).
        **options: frame assembly and geometry.

    Raises:
        InputError: for a missing file or one OpenCV cannot open.
    """

    def __init__(self, path: str, *, uri: str = "", rows: int | None = None, **options: Any) -> None:
        self.path = Path(path).expanduser()
        super().__init__(uri or f"webvideo://{self.path.as_posix()}", **options)
        if not self.path.is_file():
            raise InputError(self.path, "video file not found")
        if rows is not None and rows < 1:
            raise InputError(f"{self.uri}: rows", f"must be >= 1, got {rows}")
        capture = cv2.VideoCapture(str(self.path))
        try:
            if not capture.isOpened():
                raise InputError(self.path, "cannot open the video file")
            self.frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            self.frame_height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            self.width_px = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        finally:
            capture.release()
        self.rows = rows or self.frame_height

    def _blocks(self) -> Generator[RowBlock, None, None]:
        capture = cv2.VideoCapture(str(self.path))
        try:
            index = 0
            while not self.stopping:
                ok, image = capture.read()
                if not ok:
                    if index < self.frame_count:  # an unreadable frame: skip it, its rows become a gap
                        index += 1
                        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                        continue
                    return
                pixels = _to_rgb(image)
                if pixels.ndim == 3 and _grey(pixels):
                    pixels = pixels[..., 0]  # a grey web stays grey (a codec leaves channels a little apart)
                yield RowBlock(index * self.rows, pixels[: self.rows].copy(), time.time())
                index += 1
        finally:
            capture.release()


@register_source(
    "webvideo",
    path=True,
    options=row_options(rows=Option("rows", int)),
    example="webvideo:///data/web.avi?frame=256&overlap=32",
    summary="a video of a web, each video frame a block of rows",
)
def open_webvideo(target: SourceTarget, **options: Any) -> WebVideoSource:
    """Open ``webvideo:///path/to/web.avi``."""
    return WebVideoSource(target.location, uri=target.uri, **options)
