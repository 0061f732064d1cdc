"""Defect regions: connected parts of an anomaly map at or above a threshold, or detected boxes.

numpy and OpenCV only, for the torch-free runtime.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from flawscope.errors import InputError
from flawscope.types import Region


def find_regions(
    anomaly_map: np.ndarray,
    threshold: float,
    min_area_px: int = 0,
    mm_per_px: float | None = None,
    max_regions: int | None = 50,
) -> tuple[Region, ...]:
    """Connected regions (8-connectivity) of the pixels with ``anomaly_map >= threshold``.

    Args:
        anomaly_map: ``(H, W)`` float anomaly map at the original image's resolution, so that the
            regions are in original image pixels.
        threshold: pixels at or above it belong to a region (the reject threshold, on the score's
            scale).
        min_area_px: leave out regions smaller than this many pixels.
        mm_per_px: the station's pixel size; when given, ``Region.area_mm2`` is filled in.
        max_regions: keep at most this many regions (the largest); ``None`` keeps all.

    Returns:
        Regions sorted largest first (ties: higher peak first), with bounding boxes
        ``(x0, y0, x1, y1)`` (x1/y1 exclusive), area, peak value and centroid ``(x, y)``.

    Raises:
        InputError: for a map that is not 2-D or a threshold that is not finite.
    """
    values = np.asarray(anomaly_map)
    if values.ndim != 2:
        raise InputError("anomaly_map", f"expected an (H, W) array, got shape {values.shape}")
    if not np.isfinite(threshold):
        raise InputError("threshold", f"must be finite, got {threshold}")
    above = values >= threshold
    rows = np.flatnonzero(above.any(axis=1))
    if not rows.size:
        return ()
    # Labelled inside the smallest window holding every pixel above the level: the components
    # are the same, and the labelling's cost follows the window's area, not the map's (a
    # failing part's region covers a small share of it).
    cols = np.flatnonzero(above.any(axis=0))
    top, left = int(rows[0]), int(cols[0])
    window = (slice(top, int(rows[-1]) + 1), slice(left, int(cols[-1]) + 1))
    above, values = np.ascontiguousarray(above[window]), values[window]
    # BBDT: OpenCV's default algorithm spends 0.5 ms on the statistics of a 256 x 256 map even
    # when it is empty; BBDT gives the same components and statistics in 0.16 ms.
    n_labels, labels, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(
        above.view(np.uint8), 8, cv2.CV_32S, cv2.CCL_BBDT
    )
    peaks = _peaks(values, above, labels, stats)  # inside the window: before the offset below
    stats[:, 0] += left
    stats[:, 1] += top
    centroids += (left, top)

    regions = []
    for k in range(1, n_labels):
        x, y, w, h, area = (int(v) for v in stats[k, :5])
        if area < min_area_px:
            continue
        regions.append(
            Region(
                bbox=(x, y, x + w, y + h),
                area_px=area,
                peak=float(peaks[k]),
                centroid=(float(centroids[k, 0]), float(centroids[k, 1])),
                area_mm2=None if mm_per_px is None else area * mm_per_px * mm_per_px,
            )
        )
    regions.sort(key=lambda r: (-r.area_px, -r.peak))
    return tuple(regions if max_regions is None else regions[:max_regions])


# Up to this many regions, each region's peak is read inside its own box; beyond, in one pass.
_FEW_REGIONS = 8


def _peaks(values: np.ndarray, above: np.ndarray, labels: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """``(n_labels,)`` float64 maximum of ``values`` over each label's pixels (label 0: ``-inf``).

    A failing part usually has one to a few regions: then each peak is read inside the region's
    box, which costs that box's area: less than a pass over every pixel above the level, by far
    when one region covers most of the map (benchmarks/regions.py). Many regions go through one
    unbuffered maximum per label (``np.maximum.at``).
    """
    n_labels = len(stats)
    peaks = np.full(n_labels, -np.inf)
    if n_labels - 1 <= _FEW_REGIONS:
        for k in range(1, n_labels):
            x, y, w, h = (int(v) for v in stats[k, :4])
            box = (slice(y, y + h), slice(x, x + w))
            peaks[k] = float(values[box][labels[box] == k].max())
        return peaks
    np.maximum.at(peaks, labels[above], values[above].astype(np.float64))
    return peaks


Box = tuple[float, float, float, float, float, str]


def regions_from_boxes(
    boxes: Sequence[Box], level: float, mm_per_px: float | None = None
) -> tuple[Region, ...]:
    """Regions of the detected boxes whose confidence is at least ``level``.

    A box's region is its rectangle in whole image pixels (the smallest one holding it:
    ``floor`` of the start, ``ceil`` of the end, x1/y1 exclusive as for map regions), its area
    the rectangle's, its peak the box's confidence, its centroid the box's centre and its
    category the box's class.

    Args:
        boxes: one image's finished detections ``(x0, y0, x1, y1, confidence, class)`` in its
            pixels (:func:`flawscope.data.outputs.finish_boxes`).
        level: lowest confidence of a box that becomes a region.
        mm_per_px: the station's pixel size; when given, ``Region.area_mm2`` is filled in.

    Returns:
        Regions sorted largest first (ties: more confident first), as :func:`find_regions`.

    Raises:
        InputError: for a level that is not finite.
    """
    if not np.isfinite(level):
        raise InputError("level", f"must be finite, got {level}")
    regions = []
    for x0, y0, x1, y1, confidence, category in boxes:
        if not confidence >= level:
            continue
        bbox = (int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1)))
        area = max(bbox[2] - bbox[0], 0) * max(bbox[3] - bbox[1], 0)
        regions.append(
            Region(
                bbox=bbox,
                area_px=area,
                peak=float(confidence),
                centroid=((x0 + x1) / 2, (y0 + y1) / 2),
                area_mm2=None if mm_per_px is None else area * mm_per_px * mm_per_px,
                category=category,
            )
        )
    regions.sort(key=lambda r: (-r.area_px, -r.peak))
    return tuple(regions)
