"""Line-scan rows assembled into overlapping frames of a continuous web, gaps kept as gaps.

A line-scan camera has no image, only rows, each with its index (the encoder count, or the
camera's line counter). :class:`FrameAssembler` takes blocks of rows (:class:`RowBlock`) and
gives :class:`WebFrame` records: ``frame_rows`` high, each starting ``frame_rows - overlap_rows``
after the previous one, so a defect up to ``overlap_rows`` long is whole in at least one frame.

Rows that never arrived are a **gap**: the assembler gives a not-inspected frame covering exactly
the missing rows (``image=None``), so the stretch of web is recorded as not inspected, never
passed. Frames are *split* at a gap rather than marked not inspected whole: the frame before the
gap is moved back so that it ends on the last row received (it overlaps its predecessor more),
and the next frame starts on the first row after the gap. Only the missing rows, and a stretch
between two gaps too short for one frame, are not inspected.

Rows that arrive late (an index already passed) or twice are counted and dropped: the stretch
they belong to was already inspected or already recorded as a gap, and stays so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from flawscope.errors import InputError


@dataclass(frozen=True)
class RowBlock:
    """Consecutive rows of a line-scan camera (or a strip), with the index of the first one.

    Attributes:
        first_row: row (encoder) index of ``rows[0]``; row ``i`` of the block is ``first_row + i``.
        rows: ``(n, W)`` or ``(n, W, 3)`` uint8/uint16 pixels.
        timestamp: acquisition time of the block (seconds since the epoch).
    """

    first_row: int
    rows: np.ndarray
    timestamp: float = 0.0

    @property
    def end_row(self) -> int:
        """Index one past the block's last row."""
        return self.first_row + int(self.rows.shape[0])


@dataclass(frozen=True)
class WebFrame:
    """A stretch of web: an assembled frame to inspect, or rows that cannot be inspected.

    Attributes:
        index: frame number within the run (0, 1, ...), gaps included.
        first_row: row index of the frame's first row.
        n_rows: rows covered (``frame_rows`` for an inspectable frame).
        image: ``(n_rows, W[, 3])`` pixels; ``None`` when the stretch is not inspected.
        timestamp: acquisition time of the frame's last row.
        reason: why the stretch is not inspected (``""`` for an inspectable frame).
    """

    index: int
    first_row: int
    n_rows: int
    image: np.ndarray | None
    timestamp: float = 0.0
    reason: str = ""

    @property
    def end_row(self) -> int:
        """Index one past the frame's last row."""
        return self.first_row + self.n_rows

    @property
    def inspectable(self) -> bool:
        """True for a frame with pixels; False for a not-inspected stretch."""
        return self.image is not None


@dataclass(frozen=True)
class AssemblyStats:
    """What the assembler met so far.

    Attributes:
        rows_received: rows taken into frames.
        rows_missing: rows that never arrived (inside gaps).
        gaps: number of gaps.
        rows_late: rows that arrived after their place had passed (out of order), dropped.
        rows_duplicate: rows delivered twice, dropped.
        blocks_out_of_order: blocks that started before the expected row.
        rows_not_inspected: rows recorded as not inspected (the gaps, and stretches too short
            for one frame).
    """

    rows_received: int = 0
    rows_missing: int = 0
    gaps: int = 0
    rows_late: int = 0
    rows_duplicate: int = 0
    blocks_out_of_order: int = 0
    rows_not_inspected: int = 0


def check_frame_geometry(frame_rows: int, overlap_rows: int, where: str = "frame") -> None:
    """Refuse frame heights and overlaps that cannot tile a web, naming the field.

    Raises:
        InputError: unless ``frame_rows >= 8`` and ``0 <= overlap_rows < frame_rows``.
    """
    if frame_rows < 8:
        raise InputError(f"{where}: frame_rows", f"must be at least 8 rows, got {frame_rows}")
    if overlap_rows < 0:
        raise InputError(f"{where}: overlap_rows", f"must be >= 0, got {overlap_rows}")
    if overlap_rows >= frame_rows:
        raise InputError(
            f"{where}: overlap_rows",
            f"must be smaller than frame_rows ({frame_rows}), got {overlap_rows}: frames would not advance",
        )


class FrameAssembler:
    """Turn row blocks into overlapping frames; report gaps as not-inspected stretches.

    Args:
        frame_rows: rows per frame.
        overlap_rows: rows shared by consecutive frames (``0 <= overlap_rows < frame_rows``).
        first_row: the index of the first row expected (``None``: whatever the first block says).

    Raises:
        InputError: for a frame height or overlap that cannot tile a web.
    """

    def __init__(self, frame_rows: int, overlap_rows: int, first_row: int | None = None) -> None:
        check_frame_geometry(frame_rows, overlap_rows)
        self.frame_rows = frame_rows
        self.overlap_rows = overlap_rows
        self.step = frame_rows - overlap_rows
        self._expected = first_row  # index of the next row wanted
        self._run_start = first_row if first_row is not None else 0  # first row of the current run
        self._next_start = self._run_start  # first row of the next frame to emit
        self._covered = self._run_start  # rows before this are in an emitted frame (or a gap)
        self._buffer: list[np.ndarray] = []  # rows from self._buffer_start on
        self._buffer_start = self._run_start
        self._stamp = 0.0
        self._index = 0
        self._stats = {name: 0 for name in AssemblyStats.__dataclass_fields__}

    @property
    def stats(self) -> AssemblyStats:
        """Counters so far."""
        return AssemblyStats(**self._stats)

    @property
    def next_row(self) -> int | None:
        """The row index wanted next (``None`` before the first block)."""
        return self._expected

    def _emit(self, first_row: int, n_rows: int, image: np.ndarray | None, reason: str = "") -> WebFrame:
        frame = WebFrame(self._index, first_row, n_rows, image, self._stamp, reason)
        self._index += 1
        if image is None:
            self._stats["rows_not_inspected"] += n_rows
        return frame

    def _rows(self, start: int, stop: int) -> np.ndarray:
        joined = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer = [joined]
        return joined[start - self._buffer_start : stop - self._buffer_start].copy()

    def _trim(self) -> None:
        """Keep only the last ``frame_rows`` rows (the tail frame at a gap may need them)."""
        if not self._buffer or self._expected is None:
            return
        keep_from = max(self._buffer_start, self._expected - self.frame_rows)
        if keep_from > self._buffer_start:
            joined = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
            self._buffer = [joined[keep_from - self._buffer_start :]]
            self._buffer_start = keep_from

    def _full_frames(self) -> Iterator[WebFrame]:
        assert self._expected is not None
        while self._next_start + self.frame_rows <= self._expected:
            start = self._next_start
            yield self._emit(start, self.frame_rows, self._rows(start, start + self.frame_rows))
            self._covered = start + self.frame_rows
            self._next_start = start + self.step
        self._trim()

    def _close_run(self) -> Iterator[WebFrame]:
        """Close the current run: its rows not yet in a frame, as a frame or a stretch.

        The frame is moved back to end on the run's last row; a run shorter than one frame is a
        not-inspected stretch.
        """
        if self._expected is None or self._covered >= self._expected:
            return
        end = self._expected
        if end - self._run_start >= self.frame_rows:
            start = end - self.frame_rows
            yield self._emit(start, self.frame_rows, self._rows(start, end))
        else:
            n = end - self._covered
            reason = (
                f"only {end - self._run_start} rows between gaps, fewer than one frame ({self.frame_rows})"
            )
            yield self._emit(self._covered, n, None, reason)
        self._covered = end

    def push(self, block: RowBlock) -> Iterator[WebFrame]:
        """Take a block of rows; yield every frame (and gap) it completes.

        Raises:
            InputError: for a block whose rows are not an image's rows.
        """
        rows = np.asarray(block.rows)
        if rows.ndim not in (2, 3) or rows.shape[0] == 0:
            raise InputError("rows", f"expected (n, W) or (n, W, 3) rows, got shape {rows.shape}")
        if self._buffer and rows.shape[1:] != self._buffer[0].shape[1:]:
            raise InputError(
                "rows", f"row width changed from {self._buffer[0].shape[1:]} to {rows.shape[1:]}"
            )
        if self._expected is None:
            self._expected = self._run_start = self._next_start = self._covered = block.first_row
            self._buffer_start = block.first_row
        first = block.first_row
        if first < self._expected:
            self._stats["blocks_out_of_order"] += 1
            stale = min(self._expected, block.end_row) - first
            # Rows still in the buffer arrived twice; older ones are late (their stretch is closed).
            in_buffer = max(0, min(self._expected, block.end_row) - max(first, self._buffer_start))
            self._stats["rows_duplicate"] += in_buffer if self._buffer else 0
            self._stats["rows_late"] += stale - (in_buffer if self._buffer else 0)
            if block.end_row <= self._expected:
                return
            rows = rows[self._expected - first :]
            first = self._expected
        self._stamp = block.timestamp
        if first > self._expected:  # a gap: close the run, record the missing rows, start anew
            yield from self._close_run()
            missing = first - self._expected
            self._stats["rows_missing"] += missing
            self._stats["gaps"] += 1
            reason = f"rows {self._expected}-{first - 1} not received ({missing} rows)"
            yield self._emit(self._expected, missing, None, reason)
            self._run_start = self._next_start = self._covered = self._buffer_start = first
            self._buffer = []
        self._buffer.append(rows)
        self._expected = first + rows.shape[0]
        self._stats["rows_received"] += rows.shape[0]
        yield from self._full_frames()

    def finish(self) -> Iterator[WebFrame]:
        """The end of the web: the last rows in a frame that ends on the last row (or not inspected)."""
        yield from self._close_run()
        self._buffer = []
