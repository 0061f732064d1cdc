"""Defects merged across frame boundaries and overlaps, reported once in web coordinates."""

from __future__ import annotations

import math

import pytest
from tests.webscan.conftest import DeviationInspector, flat_strip

from flawscope.acquire import open_source
from flawscope.webscan import WebScan

# Frames of 64 rows every 48 rows (overlap 16): boundaries at 64, 112, 160, ...; overlaps 48-64, 96-112...
URI = "webstrip://{path}?frame=64&overlap=16&block=10&mm_per_row=0.5&mm_per_px=0.25&roll=C17"


def _scan(path, **kwargs):
    source = open_source(URI.format(path=path))
    return WebScan(source, DeviationInspector(), **kwargs).run(), source


def test_a_defect_straddling_a_frame_boundary_is_reported_once_at_its_place(strip_file) -> None:
    # Rows 58-69 cross the boundary at row 64 (frame 0 ends there) and the overlap 48-64 edge.
    # Rows 150-171 straddle row 160 where frame 2 (96-160) ends, outside any overlap start.
    path = strip_file(flat_strip(400, 40, [(58, 10, 12, 6), (150, 20, 22, 4)]))
    result, _ = _scan(path)
    assert len(result.defects) == 2
    first, second = result.defects
    assert (first.row0, first.row1, first.col0, first.col1) == (58, 70, 10, 16)
    assert len(first.frames) >= 2  # seen by more than one frame, reported once
    assert first.length_mm == pytest.approx(12 * 0.5) and first.width_mm == pytest.approx(6 * 0.25)
    assert (second.row0, second.row1) == (150, 172)
    # Position: the peak pixel of a flat defect is its first pixel; within one pixel of its centre here.
    assert abs(second.along_m - (161 * 0.5) / 1000) <= 0.006
    assert abs(second.across_mm - 22 * 0.25) <= 1.0
    assert all(d.roll == "C17" for d in result.defects)


def test_a_defect_inside_an_overlap_is_reported_once(strip_file) -> None:
    path = strip_file(flat_strip(300, 40, [(100, 5, 5, 5)]))  # rows 100-104: in the 96-112 overlap
    result, _ = _scan(path)
    assert len(result.defects) == 1
    assert result.defects[0].frames == (48, 96)  # both frames saw it


def test_two_separate_defects_stay_two(strip_file) -> None:
    path = strip_file(flat_strip(300, 40, [(100, 5, 5, 5), (100, 25, 5, 5), (200, 5, 3, 3)]))
    result, _ = _scan(path)
    assert len(result.defects) == 3


def test_summary_lengths_and_yield(strip_file) -> None:
    path = strip_file(flat_strip(4000, 40, [(1100, 5, 5, 5)]))  # 2 m of web at 0.5 mm per row
    result, _ = _scan(path, segment_m=0.5)
    s = result.summary
    assert s.length_m == pytest.approx(2.0) and s.not_inspected_m == 0 and s.inspected_m == pytest.approx(2.0)
    assert s.defects == 1 and s.defects_per_100m == pytest.approx(50.0)
    assert s.clean_m == pytest.approx(1.5) and s.yield_ == pytest.approx(0.75)  # one 0.5 m segment lost
    assert s.width_mm == pytest.approx(10.0)
    assert math.isfinite(s.line_rate_m_min)


def test_invalid_overlap_is_refused_naming_the_field(strip_file) -> None:
    from flawscope.errors import InputError

    path = strip_file(flat_strip(100, 40, []))
    with pytest.raises(InputError, match="overlap_rows"):
        open_source(f"webstrip://{path}?frame=64&overlap=64")
