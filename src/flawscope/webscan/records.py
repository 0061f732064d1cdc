"""Typed records of a web scan: a defect in web coordinates, a not-inspected stretch, a roll's summary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WebDefect:
    """One defect of a web, merged over every frame that saw it, in web coordinates.

    Attributes:
        number: 1, 2, ... in the order the defects were closed (web order, roughly).
        roll: the roll (coil) identifier.
        along_m: position (the centre of its anomaly peak, in the frame with the highest peak),
            metres along the web from the roll start.
        across_mm: position, millimetres across the web from its first pixel.
        length_mm: extent along the web, mm (of the map above the reject threshold: the map's
            resolution widens a defect of a few pixels).
        width_mm: extent across the web, mm (likewise).
        row0, row1: first row and one past the last row it covers (web rows).
        col0, col1: first column and one past the last column it covers (web pixels).
        peak: highest anomaly value over its frames.
        frames: first rows of the frames whose regions it merges.
        category: defect class when the model names one.
    """

    number: int
    roll: str
    along_m: float
    across_mm: float
    length_mm: float
    width_mm: float
    row0: int
    row1: int
    col0: int
    col1: int
    peak: float
    frames: tuple[int, ...]
    category: str | None = None


@dataclass(frozen=True)
class WebStretch:
    """A stretch of web that was not inspected (rows lost, or too few rows between two gaps).

    Attributes:
        row0, row1: first row and one past the last.
        start_m, end_m: the same in metres along the web.
        reason: why it was not inspected.
    """

    row0: int
    row1: int
    start_m: float
    end_m: float
    reason: str

    @property
    def length_m(self) -> float:
        """Its length in metres."""
        return self.end_m - self.start_m


@dataclass(frozen=True)
class RollSummary:
    """A roll's result: what was inspected, what was found, what could not be inspected.

    Attributes:
        roll: the roll identifier.
        length_m: web length seen, from the first row to the last (gaps included).
        inspected_m: metres inspected (length minus the not-inspected stretches).
        not_inspected_m: metres not inspected.
        width_mm: web width.
        defects: number of defects.
        defects_per_100m: defects per 100 inspected metres.
        segment_m: length of the segments the yield counts.
        clean_m: metres in segments wholly inspected and free of defects.
        yield_: ``clean_m / length_m`` (0 for an empty web): a segment that was not inspected
            is never clean.
        frames: frames inspected.
        rows_missing, gaps, rows_late, rows_duplicate: the source's counters.
        seconds: wall time of the scan.
        line_rate_m_min: metres inspected per minute of wall time (what the runtime sustained).
        inspected_width_mm: mean width inspected across the web (the whole width unless the
            edges are found or a margin is set; :mod:`flawscope.webscan.edges`).
        edge_not_inspected_mm: mean width across the web left out at its edges (the margins,
            and the background beyond found edges): recorded, never passed.
    """

    roll: str
    length_m: float
    inspected_m: float
    not_inspected_m: float
    width_mm: float
    defects: int
    defects_per_100m: float
    segment_m: float
    clean_m: float
    yield_: float
    frames: int
    rows_missing: int
    gaps: int
    rows_late: int
    rows_duplicate: int
    seconds: float
    line_rate_m_min: float
    inspected_width_mm: float = 0.0
    edge_not_inspected_mm: float = 0.0
