"""Defect positions: the model's map offset measured and corrected; the most central frame's place kept."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flawscope.acquire.rows import WebGeometry
from flawscope.types import Region
from flawscope.webscan.merge import DefectMerger, FrameRegion
from flawscope.webscan.register import measure_offset


def _shifted_model(dx: float, dy: float):
    """A stand-in model whose map is the darkening, blurred and moved by ``(dx, dy)`` pixels."""

    def score_maps(images):
        maps = []
        for image in images:
            dark = np.clip(140.0 - image.astype(np.float32), 0, None)
            blurred = cv2.GaussianBlur(dark, (0, 0), 3.0)
            move = np.float32([[1, 0, dx], [0, 1, dy]])
            maps.append(cv2.warpAffine(blurred, move, blurred.shape[::-1], borderMode=cv2.BORDER_REFLECT))
        return tuple(maps)

    return score_maps


@pytest.mark.parametrize(("dx", "dy"), [(-2.0, -1.5), (1.25, 0.0)])
def test_the_maps_offset_is_measured_on_a_textured_frame(dx, dy) -> None:
    rng = np.random.default_rng(4)
    frame = np.clip(130 + cv2.GaussianBlur(rng.normal(0, 6, (256, 512)), (0, 0), 1.5), 0, 255).astype(
        np.uint8
    )
    found = measure_offset(frame, _shifted_model(dx, dy))
    assert found is not None and found.dots >= 16
    assert found.dx == pytest.approx(dx, abs=0.3) and found.dy == pytest.approx(dy, abs=0.3)
    assert measure_offset(frame[:40, :40], _shifted_model(dx, dy)) is None  # too small for the dots


def _region(y0: int, y1: int, peak: float) -> Region:
    return Region((10, y0, 20, y1), (y1 - y0) * 10, peak, (15.0, (y0 + y1) / 2))


def test_the_place_comes_from_the_frame_that_saw_the_defect_farthest_from_its_edges() -> None:
    merger = DefectMerger(WebGeometry(1.0, 1.0, 64), "R")
    # Frame at row 0 sees the defect well inside (rows 100-110, peak at 105): margin 105 rows.
    central = FrameRegion(_region(100, 110, 60.0), (15.0, 105.0), margin=105.0)
    # Frame at row 96 sees it at its first rows (4-14), where its map is cut: higher peak, wrong place.
    edge = FrameRegion(_region(4, 14, 90.0), (15.0, 12.0), margin=12.0)
    closed = list(merger.add(0, [central])) + list(merger.add(96, [edge])) + list(merger.finish())
    assert len(closed) == 1
    defect = closed[0]
    assert defect.along_m * 1000 == pytest.approx(105.0)  # not 96 + 12 = 108
    assert defect.peak == 90.0 and defect.frames == (0, 96)
