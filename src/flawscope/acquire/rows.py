"""Line-scan sources: blocks of rows with their row (encoder) index, assembled into web frames.

A :class:`RowSource` is a :class:`~flawscope.acquire.base.Source` like any other (opened from a
URI, closed from any thread, with ``health()``), whose subclasses deliver :class:`RowBlock`
records (:meth:`RowSource.blocks`). Iterating it gives assembled frames
(:class:`~flawscope.acquire.assembly.FrameAssembler`) as :class:`~flawscope.types.Frame`
records, so ``flawscope inspect`` can judge a web frame by frame; a stretch of web that could not
be inspected (rows lost) is a frame with ``image=None``, recorded as a reject. ``flawscope
web-scan run`` goes further: it merges defects across frames and reports them in web coordinates
(:mod:`flawscope.webscan`).

Every frame's ``meta`` carries its place on the web: ``first_row``, ``n_rows``, ``along_m`` (the
frame's first row, metres from the roll start), ``length_mm``, ``width_mm``, ``mm_per_row``,
``mm_per_px`` and ``roll``.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass

from flawscope.acquire.assembly import AssemblyStats, FrameAssembler, RowBlock, WebFrame, check_frame_geometry
from flawscope.acquire.base import Source
from flawscope.acquire.registry import Option
from flawscope.errors import InputError
from flawscope.types import Frame


@dataclass(frozen=True)
class WebGeometry:
    """Where a web's pixels are: the along-web and across-web pixel sizes.

    Attributes:
        mm_per_row: web travel per row (the encoder's resolution), in mm.
        mm_per_px: across-web size of a pixel, in mm.
        width_px: pixels across the web.
        origin_row: the row index of the roll start (row ``origin_row`` is 0 m).
    """

    mm_per_row: float
    mm_per_px: float
    width_px: int
    origin_row: int = 0

    def __post_init__(self) -> None:
        for name in ("mm_per_row", "mm_per_px"):
            value = getattr(self, name)
            if not value > 0:
                raise InputError(name, f"must be > 0 mm, got {value}")

    def along_m(self, row: float) -> float:
        """Metres from the roll start of a (fractional) row index."""
        return (row - self.origin_row) * self.mm_per_row / 1000.0

    def across_mm(self, x: float) -> float:
        """Millimetres from the web's first pixel of a (fractional) column."""
        return x * self.mm_per_px

    @property
    def width_mm(self) -> float:
        """The web's width in mm."""
        return self.width_px * self.mm_per_px

    def rows_per_second(self, speed_m_min: float) -> float:
        """The line rate an encoder gives at a web speed (m/min) for this row size."""
        return speed_m_min * 1000.0 / 60.0 / self.mm_per_row


#: Query options every line-scan scheme takes (frame assembly and geometry).
ROW_OPTIONS: dict[str, Option] = {
    "frame": Option("frame_rows", int),
    "overlap": Option("overlap_rows", int),
    "mm_per_row": Option("mm_per_row", float),
    "mm_per_px": Option("mm_per_px", float),
    "roll": Option("roll", str),
}


class RowSource(Source):
    """Base class of line-scan sources: subclasses implement :meth:`_blocks`.

    Args:
        uri: the source's URI.
        frame_rows: rows per assembled frame.
        overlap_rows: rows shared by consecutive frames.
        mm_per_row: web travel per row, in mm.
        mm_per_px: across-web pixel size, in mm.
        roll: the roll (coil) identifier, part of every frame's part id.

    Raises:
        InputError: for an invalid frame height, overlap or pixel size (naming the field).
    """

    def __init__(
        self,
        uri: str,
        *,
        frame_rows: int = 256,
        overlap_rows: int = 32,
        mm_per_row: float = 1.0,
        mm_per_px: float = 1.0,
        roll: str = "roll",
    ) -> None:
        super().__init__(uri)
        check_frame_geometry(frame_rows, overlap_rows, uri)
        for name, value in (("mm_per_row", mm_per_row), ("mm_per_px", mm_per_px)):
            if not value > 0:
                raise InputError(f"{uri}: {name}", f"must be > 0 mm, got {value}")
        if not roll or any(c in roll for c in "/\\\x00"):
            raise InputError(f"{uri}: roll", f"must be a plain name, got {roll!r}")
        self.frame_rows = frame_rows
        self.overlap_rows = overlap_rows
        self.mm_per_row = mm_per_row
        self.mm_per_px = mm_per_px
        self.roll = roll
        self.width_px = 0  # known once the first rows arrive (or the subclass knows it up front)
        self.assembly = AssemblyStats()

    def _blocks(self) -> Generator[RowBlock, None, None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def geometry(self) -> WebGeometry:
        """The web's geometry (``width_px`` is 0 until the first rows arrived, unless known)."""
        return WebGeometry(self.mm_per_row, self.mm_per_px, self.width_px)

    def blocks(self) -> Iterator[RowBlock]:
        """The raw row blocks, as delivered, until the source ends or is closed."""
        blocks = self._blocks()
        try:
            for block in blocks:
                if self.width_px == 0:
                    self.width_px = int(block.rows.shape[1])
                yield block
                if self.stopping:
                    return
        finally:
            blocks.close()

    def web_frames(self) -> Iterator[WebFrame]:
        """Assembled frames and not-inspected stretches, in web order; :attr:`assembly` counts."""
        assembler = FrameAssembler(self.frame_rows, self.overlap_rows)
        for block in self.blocks():
            yield from assembler.push(block)
            self.assembly = assembler.stats
            self.missed = self.assembly.rows_missing
        yield from assembler.finish()
        self.assembly = assembler.stats

    def frame_meta(self, frame: WebFrame) -> Mapping[str, str]:
        """The web position of a frame, as frame metadata (text values)."""
        geometry = self.geometry()
        return {
            "roll": self.roll,
            "first_row": str(frame.first_row),
            "n_rows": str(frame.n_rows),
            "along_m": f"{geometry.along_m(frame.first_row):.6f}",
            "length_mm": f"{frame.n_rows * self.mm_per_row:.6g}",
            "width_mm": f"{geometry.width_mm:.6g}",
            "mm_per_row": f"{self.mm_per_row:.6g}",
            "mm_per_px": f"{self.mm_per_px:.6g}",
        }

    def part_id(self, frame: WebFrame) -> str:
        """A frame's part id: the roll and the frame's first row (unique along one roll)."""
        return f"{self.roll}-r{frame.first_row:010d}"

    def _frames(self) -> Generator[Frame, None, None]:
        for frame in self.web_frames():
            stamp = frame.timestamp or time.time()
            error = None if frame.inspectable else f"not inspected: {frame.reason}"
            yield Frame(
                self.part_id(frame), frame.image, stamp, self.uri, self.frame_meta(frame), error=error
            )


def row_options(**extra: Option) -> dict[str, Option]:
    """The common line-scan options plus a scheme's own."""
    return {**ROW_OPTIONS, **extra}
