"""A roll's summary: inspected and not-inspected metres, defects per 100 m, the length-based yield.

The yield counts segments of ``segment_m`` metres: a segment is clean when it was inspected whole
and no defect touches it. A segment with a not-inspected stretch is never clean (nothing passes
that was not inspected), so ``clean_m / length_m`` is a lower bound on the good web.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from flawscope.acquire.rows import RowSource
from flawscope.errors import InputError
from flawscope.webscan.records import RollSummary, WebDefect, WebStretch


def summarize(
    source: RowSource,
    defects: Sequence[WebDefect],
    stretches: Sequence[WebStretch],
    *,
    first_row: int,
    last_row: int,
    frames: int,
    seconds: float,
    segment_m: float = 1.0,
    inspected_width_mm: float | None = None,
) -> RollSummary:
    """The summary of a scanned roll.

    ``inspected_width_mm`` is the mean width inspected across the web (None: all of it).

    Raises:
        InputError: for a segment length that is not positive.
    """
    if not segment_m > 0:
        raise InputError("segment_m", f"must be > 0 m, got {segment_m}")
    g = source.geometry()
    start_m, end_m = g.along_m(first_row), g.along_m(last_row)
    length = max(0.0, end_m - start_m)
    not_inspected = sum(s.length_m for s in stretches)
    inspected = max(0.0, length - not_inspected)
    n_segments = max(0, math.ceil(length / segment_m - 1e-9))
    dirty = np.zeros(n_segments, bool)

    def mark(a: float, b: float) -> None:
        if n_segments == 0:
            return
        lo = min(n_segments - 1, max(0, int((a - start_m) // segment_m)))
        hi = min(n_segments - 1, max(lo, int((b - start_m - 1e-9) // segment_m)))
        dirty[lo : hi + 1] = True

    for stretch in stretches:
        mark(stretch.start_m, stretch.end_m)
    for defect in defects:
        mark(g.along_m(defect.row0), g.along_m(defect.row1))
    # The last segment may be shorter than segment_m.
    seg_lengths = np.full(n_segments, segment_m)
    if n_segments:
        seg_lengths[-1] = length - segment_m * (n_segments - 1)
    clean = float(seg_lengths[~dirty].sum())
    a = source.assembly
    return RollSummary(
        roll=source.roll,
        length_m=length,
        inspected_m=inspected,
        not_inspected_m=not_inspected,
        width_mm=g.width_mm,
        defects=len(defects),
        defects_per_100m=100.0 * len(defects) / inspected if inspected > 0 else math.nan,
        segment_m=segment_m,
        clean_m=clean,
        yield_=clean / length if length > 0 else 0.0,
        frames=frames,
        rows_missing=a.rows_missing,
        gaps=a.gaps,
        rows_late=a.rows_late,
        rows_duplicate=a.rows_duplicate,
        seconds=seconds,
        line_rate_m_min=inspected / seconds * 60.0 if seconds > 0 else math.nan,
        inspected_width_mm=g.width_mm if inspected_width_mm is None else inspected_width_mm,
        edge_not_inspected_mm=0.0
        if inspected_width_mm is None
        else max(0.0, g.width_mm - inspected_width_mm),
    )
