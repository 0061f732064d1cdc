"""Where a defect is in a frame: the peak of its anomaly map, and the regions the merger takes.

A judged frame that fails or goes to review gives its regions, each placed at its map's peak
(:func:`peak_in`) and corrected by the model's measured map offset
(:mod:`flawscope.webscan.register`), as :class:`~flawscope.webscan.merge.FrameRegion` for the
:class:`~flawscope.webscan.merge.DefectMerger`.
"""

from __future__ import annotations

import numpy as np

from flawscope.types import Outcome, Region, Verdict
from flawscope.webscan.merge import FrameRegion


def peak_in(amap: np.ndarray | None, box: tuple[int, int, int, int]) -> tuple[float, float] | None:
    """``(x, y)`` where a region's defect is: the centroid of its map's upper half around the peak.

    The map comes from a coarse grid (stride 8) smoothed up to pixels, so its highest pixel is
    only as good as the grid; the centroid of the values above half the region's height
    (``(peak + lowest) / 2`` inside its box) finds the blob's centre between grid points.

    Returns:
        None without a usable map.
    """
    if amap is None or amap.ndim != 2:
        return None
    x0, y0, x1, y1 = box
    window = np.asarray(amap[y0:y1, x0:x1], np.float64)
    if window.size == 0 or not np.isfinite(window).all():
        return None
    top, low = float(window.max()), float(window.min())
    weight = np.clip(window - (top + low) / 2.0, 0.0, None)
    if top <= low or weight.sum() <= 0:
        y, x = np.unravel_index(int(np.argmax(window)), window.shape)
        return float(x0 + x) + 0.5, float(y0 + y) + 0.5
    ys, xs = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
    total = float(weight.sum())
    return x0 + float((weight * xs).sum()) / total + 0.5, y0 + float((weight * ys).sum()) / total + 0.5


def defect_regions(
    verdict: Verdict, shape: tuple[int, ...], offset: tuple[float, float] = (0.0, 0.0)
) -> tuple[FrameRegion, ...]:
    """The defect regions of a frame that fails or goes to review, with their peaks.

    A frame that fails without a region (its score is above the threshold, no pixel is) gives a
    one-pixel region at its map's peak (the frame's centre without a map), so it is not lost.

    Args:
        verdict: the frame's verdict.
        shape: the frame's shape.
        offset: ``(dx, dy)`` where the model's map puts a defect relative to where it is
            (:mod:`flawscope.webscan.register`); subtracted from each peak.
    """
    if verdict.outcome not in (Outcome.FAIL, Outcome.REVIEW):
        return ()
    amap = verdict.anomaly_map
    rows = float(shape[0])

    def placed(xy: tuple[float, float]) -> tuple[tuple[float, float], float]:
        x, y = xy[0] - offset[0], xy[1] - offset[1]
        return (x, y), min(y, rows - y)

    found = []
    for region in verdict.regions:
        peak = peak_in(amap, region.bbox)
        xy, margin = placed(peak if peak is not None else region.centroid)
        found.append(FrameRegion(region, xy, margin))
    if found or verdict.outcome is not Outcome.FAIL:
        return tuple(found)
    full = (0, 0, int(shape[1]), int(shape[0]))
    x, y = peak_in(amap, full) or (shape[1] / 2.0, shape[0] / 2.0)
    value = float(amap[int(y), int(x)]) if amap is not None and amap.ndim == 2 else verdict.score
    region = Region((int(x), int(y), int(x) + 1, int(y) + 1), 1, value, (x, y), category=verdict.category)
    xy, margin = placed((x, y))
    return (FrameRegion(region, xy, margin),)
