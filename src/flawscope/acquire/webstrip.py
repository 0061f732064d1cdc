"""``webstrip://``: a very long strip image read as a line-scan camera would deliver it, in row blocks.

``.npy`` files and uncompressed TIFF files are memory-mapped and read ``block`` rows at a time, so
a strip larger than memory streams through in constant memory. Other image files (PNG, JPEG, BMP,
compressed TIFF) must be decoded whole: their size is read from the header first, and a strip
whose pixels would take more than ``max_mb`` is refused up front, naming the file and its size
(convert it to an uncompressed TIFF or ``.npy`` to stream it).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from flawscope.acquire.assembly import RowBlock
from flawscope.acquire.registry import Option, SourceTarget, register_source
from flawscope.acquire.rows import RowSource, row_options
from flawscope.errors import InputError

STREAMED = (".npy", ".tif", ".tiff")


def _memmap(path: Path) -> np.ndarray | None:
    """The strip memory-mapped, or None when its format must be decoded whole."""
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(path, f"cannot read the strip as a .npy array ({exc})") from None
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            return tifffile.memmap(path, mode="r")
        except ValueError:
            return None  # compressed or tiled: decoded whole below, if it fits
        except Exception as exc:
            raise InputError(path, f"cannot read the strip as a TIFF file ({exc})") from None
    return None


def _header_shape(path: Path) -> tuple[int, int, int]:
    """``(height, width, channels)`` from the file's header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # the size is checked here against max_mb instead
    try:
        with Image.open(path) as image:
            width, height = image.size
            channels = len(image.getbands())
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(path, f"cannot read the strip image ({exc})") from None
    return height, width, channels


class WebStripSource(RowSource):
    """Rows of a strip image file, ``block_rows`` at a time.

    Args:
        path: the strip image (``.npy``, TIFF, PNG, JPEG, BMP).
        uri: URI reported in frames.
        block_rows: rows per delivered block.
        max_mb: largest decoded size accepted for formats that cannot be streamed.
        **options: frame assembly and geometry (``frame_rows``, ``overlap_rows``, ``mm_per_row``,
            ``mm_per_px``, ``roll``).

    Raises:
        InputError: for a missing or unreadable file, one that is not an image strip, or one too
            large to decode whole (naming the file and the size).
    """

    def __init__(
        self, path: str, *, uri: str = "", block_rows: int = 256, max_mb: float = 1024.0, **options: Any
    ) -> None:
        self.path = Path(path).expanduser()
        super().__init__(uri or f"webstrip://{self.path.as_posix()}", **options)
        if block_rows < 1:
            raise InputError(f"{self.uri}: block", f"must be >= 1 row, got {block_rows}")
        if not self.path.is_file():
            raise InputError(self.path, "strip image not found")
        self.block_rows = block_rows
        self.max_mb = max_mb
        self._array = _memmap(self.path)
        if self._array is None:
            height, width, channels = _header_shape(self.path)
            size_mb = height * width * max(1, channels) / 1e6
            if size_mb > max_mb:
                raise InputError(
                    self.path,
                    f"{width} x {height} strip needs {size_mb:.0f} MB decoded, more than max_mb={max_mb:g}; "
                    "its format cannot be streamed: convert it to an uncompressed TIFF or .npy",
                )
            shape: tuple[int, ...] = (height, width)
        else:
            shape = self._array.shape
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3)):
            raise InputError(self.path, f"a strip must be (rows, width[, 3]), got shape {shape}")
        if self._array is not None and self._array.dtype not in (np.uint8, np.uint16):
            raise InputError(self.path, f"strip pixels must be uint8 or uint16, got {self._array.dtype}")
        self.height = int(shape[0])
        self.width_px = int(shape[1])

    def _decoded(self) -> np.ndarray:
        from flawscope.data.imageio import read_image

        return read_image(self.path)

    def _blocks(self) -> Generator[RowBlock, None, None]:
        array = self._array if self._array is not None else self._decoded()
        for top in range(0, self.height, self.block_rows):
            if self.stopping:
                return
            rows = np.ascontiguousarray(array[top : top + self.block_rows])
            if rows.ndim == 3 and rows.shape[2] == 1:
                rows = rows[:, :, 0]
            yield RowBlock(top, rows, time.time())


@register_source(
    "webstrip",
    path=True,
    options=row_options(block=Option("block_rows", int), max_mb=Option("max_mb", float)),
    example="webstrip:///data/coil-17.tif?frame=256&overlap=32&mm_per_row=0.5&mm_per_px=0.5",
    summary="a long strip image read in row blocks (line-scan web)",
)
def open_webstrip(target: SourceTarget, **options: Any) -> WebStripSource:
    """Open ``webstrip:///path/to/strip.tif``."""
    return WebStripSource(target.location, uri=target.uri, **options)
