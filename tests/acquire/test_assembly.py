"""Frame assembly of line-scan rows: overlap, gaps recorded as not inspected, late rows counted."""

from __future__ import annotations

import numpy as np
import pytest

from flawscope.acquire.assembly import FrameAssembler, RowBlock, WebFrame
from flawscope.errors import InputError


def _rows(first: int, n: int, width: int = 16) -> RowBlock:
    # Each row holds its own index (mod 256), so a frame's content says which rows it holds.
    values = (np.arange(first, first + n) % 256).astype(np.uint8)
    return RowBlock(first, np.repeat(values[:, None], width, axis=1))


def _assemble(
    blocks: list[RowBlock], frame: int = 32, overlap: int = 8
) -> tuple[list[WebFrame], FrameAssembler]:
    assembler = FrameAssembler(frame, overlap)
    frames = [f for b in blocks for f in assembler.push(b)]
    frames.extend(assembler.finish())
    return frames, assembler


def _check_content(frame: WebFrame) -> None:
    assert frame.image is not None
    expected = (np.arange(frame.first_row, frame.end_row) % 256).astype(np.uint8)
    assert np.array_equal(frame.image[:, 0], expected)


def test_overlapping_frames_cover_every_row() -> None:
    frames, assembler = _assemble([_rows(i, 7) for i in range(0, 203, 7)])  # 203 rows in blocks of 7
    assert [f.first_row for f in frames[:4]] == [0, 24, 48, 72]
    assert all(f.inspectable and f.n_rows == 32 for f in frames)
    assert frames[-1].end_row == 203  # the last frame is moved back to end on the last row
    covered = np.zeros(203, bool)
    for f in frames:
        _check_content(f)
        covered[f.first_row : f.end_row] = True
    assert covered.all()
    assert assembler.stats.rows_received == 203 and assembler.stats.rows_not_inspected == 0


def test_dropped_rows_are_a_not_inspected_stretch_and_frames_split_around_it() -> None:
    blocks = [_rows(i, 10) for i in range(0, 100, 10)] + [_rows(i, 10) for i in range(140, 240, 10)]
    frames, assembler = _assemble(blocks)
    gaps = [f for f in frames if not f.inspectable]
    assert len(gaps) == 1
    assert (gaps[0].first_row, gaps[0].end_row) == (100, 140)
    assert "rows 100-139 not received (40 rows)" in gaps[0].reason
    inspected = [f for f in frames if f.inspectable]
    for f in inspected:
        _check_content(f)
        assert f.end_row <= 100 or f.first_row >= 140  # no frame spans the gap
    assert any(f.end_row == 100 for f in inspected)  # the rows just before the gap are inspected
    assert any(f.first_row == 140 for f in inspected)
    stats = assembler.stats
    assert (stats.rows_missing, stats.gaps, stats.rows_not_inspected) == (40, 1, 40)


def test_a_stretch_shorter_than_a_frame_between_gaps_is_not_inspected() -> None:
    frames, assembler = _assemble([_rows(0, 64), _rows(80, 20), _rows(120, 64)])
    stretches = [(f.first_row, f.end_row) for f in frames if not f.inspectable]
    assert stretches == [(64, 80), (80, 100), (100, 120)]
    assert "fewer than one frame" in frames[[f.first_row for f in frames].index(80)].reason
    assert assembler.stats.rows_not_inspected == 56


def test_late_and_duplicate_rows_are_counted_and_dropped() -> None:
    blocks = [_rows(0, 50), _rows(40, 20), _rows(60, 40), _rows(10, 5), _rows(100, 30)]
    frames, assembler = _assemble(blocks)
    stats = assembler.stats
    assert stats.blocks_out_of_order == 2
    assert stats.rows_duplicate + stats.rows_late == 15
    assert stats.rows_received == 130 and stats.gaps == 0
    for f in frames:
        _check_content(f)  # the repeated rows did not shift anything


@pytest.mark.parametrize(
    ("frame", "overlap", "field"),
    [(32, 32, "overlap_rows"), (32, 40, "overlap_rows"), (32, -1, "overlap_rows"), (4, 0, "frame_rows")],
)
def test_invalid_frame_geometry_is_refused_by_name(frame: int, overlap: int, field: str) -> None:
    with pytest.raises(InputError, match=field):
        FrameAssembler(frame, overlap)


def test_a_block_of_another_width_is_refused() -> None:
    assembler = FrameAssembler(32, 8)
    list(assembler.push(_rows(0, 10, width=16)))
    with pytest.raises(InputError, match="row width changed"):
        list(assembler.push(_rows(10, 10, width=20)))
