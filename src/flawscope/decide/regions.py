"""Defect regions: connected parts of an anomaly map at or above a threshold.

numpy and OpenCV only, for the torch-free runtime.
"""

from __future__ import annotations

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
    if not above.any():
        return ()
    # BBDT: OpenCV's default algorithm spends 0.5 ms on the statistics of a 256 x 256 map even
    # when it is empty; BBDT gives the same components and statistics in 0.16 ms.
    n_labels, labels, stats, centroids = cv2.connectedComponentsWithStatsWithAlgorithm(
        above.astype(np.uint8), 8, cv2.CV_32S, cv2.CCL_BBDT
    )
    # Peak per label in one pass: sort the above-threshold pixels by label, reduce each run.
    pixel_labels = labels[above]
    order = np.argsort(pixel_labels, kind="stable")
    sorted_labels = pixel_labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    peaks = np.full(n_labels, -np.inf)
    peaks[sorted_labels[starts]] = np.maximum.reduceat(values[above][order].astype(np.float64), starts)

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
