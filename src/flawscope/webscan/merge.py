"""Merging defect regions across the frames of a web into one defect each, in web coordinates.

Frames overlap, and a defect can straddle a frame boundary: the same defect is then seen by two
frames (whole in the overlap, or in two pieces). Its position is taken from the frame that sees
it farthest from that frame's first and last rows: at a frame's edge the map is cut and the
network sees padding, which moves its anomaly peak by several pixels. Each frame's regions are
moved to web pixels (the frame's first row plus the region's rows) and joined with every open defect whose box
touches or overlaps theirs (within ``join_px``); one region can join several open defects into
one. A defect is closed, and reported once, when the frames have moved past it: no later frame
can reach it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from flawscope.acquire.rows import WebGeometry
from flawscope.types import Region
from flawscope.webscan.records import WebDefect


@dataclass(frozen=True)
class FrameRegion:
    """A defect region of one frame: its extent and where its peak is, in frame pixels.

    Attributes:
        region: the region (bounding box at the reject threshold, peak value).
        peak_xy: ``(x, y)`` of the defect: the centre of the region's map peak (a region's box is
            widened by the map's blur, its peak is not).
        margin: rows between the peak and the frame's nearer first or last row (how far from
            the frame's edge the frame saw it).
    """

    region: Region
    peak_xy: tuple[float, float]
    margin: float = float("inf")


@dataclass
class _Open:
    row0: int
    row1: int
    col0: int
    col1: int
    peak: float
    peak_row: float
    peak_col: float
    frames: list[int] = field(default_factory=list)
    category: str | None = None
    margin: float = float("inf")

    def touches(self, box: tuple[int, int, int, int], join: int) -> bool:
        col0, row0, col1, row1 = box
        return (
            row0 <= self.row1 + join
            and self.row0 <= row1 + join
            and col0 <= self.col1 + join
            and self.col0 <= col1 + join
        )

    def absorb(self, other: _Open) -> None:
        self.row0, self.row1 = min(self.row0, other.row0), max(self.row1, other.row1)
        self.col0, self.col1 = min(self.col0, other.col0), max(self.col1, other.col1)
        # The place from the frame that saw it farthest from its edges; the peak is the highest.
        if (other.margin, other.peak) > (self.margin, self.peak):
            self.peak_row, self.peak_col, self.margin = other.peak_row, other.peak_col, other.margin
        if other.peak > self.peak:
            self.peak, self.category = other.peak, other.category or self.category
        self.frames.extend(f for f in other.frames if f not in self.frames)


class DefectMerger:
    """Streams frames' regions in, gives each web defect out once.

    Args:
        geometry: the web's pixel sizes (for web coordinates).
        roll: the roll identifier put in each defect.
        join_px: regions this close (pixels) or closer are one defect.
    """

    def __init__(self, geometry: WebGeometry, roll: str, join_px: int = 2) -> None:
        self.geometry = geometry
        self.roll = roll
        self.join_px = join_px
        self._open: list[_Open] = []
        self._count = 0

    def add(self, first_row: int, regions: Sequence[FrameRegion]) -> Iterator[WebDefect]:
        """Take one frame's regions (frame pixels); yield the defects that are now closed.

        Frames must come in web order (their first rows never decrease).
        """
        for found in regions:
            region = found.region
            x0, y0, x1, y1 = region.bbox
            px, py = found.peak_xy
            new = _Open(
                first_row + y0,
                first_row + y1,
                x0,
                x1,
                float(region.peak),
                first_row + py,
                px,
                [first_row],
                region.category,
                found.margin,
            )
            box = (new.col0, new.row0, new.col1, new.row1)
            for other in [o for o in self._open if o.touches(box, self.join_px)]:
                self._open.remove(other)
                new.absorb(other)
            self._open.append(new)
        yield from self._close(lambda d: d.row1 + self.join_px < first_row)

    @property
    def oldest_frame(self) -> int | None:
        """The first row of the oldest frame an open defect was seen in (None when none is open)."""
        return min((min(d.frames) for d in self._open), default=None)

    def finish(self) -> Iterator[WebDefect]:
        """Every defect still open (the end of the web)."""
        yield from self._close(lambda d: True)

    def _close(self, done: object) -> Iterator[WebDefect]:
        ready = sorted((d for d in self._open if done(d)), key=lambda d: (d.row0, d.col0))  # type: ignore[operator]
        for defect in ready:
            self._open.remove(defect)
            yield self._finish(defect)

    def _finish(self, d: _Open) -> WebDefect:
        self._count += 1
        g = self.geometry
        return WebDefect(
            number=self._count,
            roll=self.roll,
            along_m=g.along_m(d.peak_row),
            across_mm=g.across_mm(d.peak_col),
            length_mm=(d.row1 - d.row0) * g.mm_per_row,
            width_mm=(d.col1 - d.col0) * g.mm_per_px,
            row0=d.row0,
            row1=d.row1,
            col0=d.col0,
            col1=d.col1,
            peak=d.peak,
            frames=tuple(sorted(d.frames)),
            category=d.category,
        )
