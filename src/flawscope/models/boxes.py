"""Boxes as segmentation: the detector learns filled box maps and reads boxes back from regions."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def box_class_map(shape: tuple[int, int], boxes: Sequence[tuple[float, float, float, float, str]],
                  classes: Sequence[str]) -> np.ndarray:  # fmt: skip
    """``(H, W)`` int class map of filled boxes (0 background, k the class's index); smaller boxes on top."""
    out = np.zeros(shape, np.int32)
    for x0, y0, x1, y1, cls in sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1])):
        if cls in classes:
            out[max(0, int(y0)) : int(np.ceil(y1)), max(0, int(x0)) : int(np.ceil(x1))] = list(classes).index(
                cls
            )
    return out


def boxes_from_regions(
    defect_map: np.ndarray, class_map: np.ndarray, classes: Sequence[str], level: float = 0.5
) -> list[tuple[float, float, float, float, float, str]]:
    """Detected boxes ``(x0, y0, x1, y1, confidence, class)``: one per connected region of each class.

    The confidence is the region's peak defect probability.
    """
    boxes = []
    above = defect_map >= level
    for k in np.unique(class_map[above]):
        if k <= 0 or k >= len(classes):
            continue
        part = (above & (class_map == k)).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(part, connectivity=8)
        for j in range(1, n):
            x, y, w, h, _ = (int(v) for v in stats[j])
            peak = float(defect_map[labels == j].max())
            boxes.append((float(x), float(y), float(x + w), float(y + h), peak, classes[int(k)]))
    return boxes
