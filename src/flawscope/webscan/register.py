"""Where a model's anomaly map puts a defect, measured: the offset the scan corrects positions by.

A backbone's feature cell does not see the pixel block the map draws it on: with TensorFlow's
"same" padding (more padding after than before at every stride-2 layer) the cells of a stride-8
grid look a little further down and right than the block centres the map is resized from, so a
defect's anomaly peak lands about 1.5-2 px up and left of the defect (measured for
EfficientNet-Lite0). Along a web that is a bias of every reported position.

:func:`measure_offset` measures it on the deployed model itself, as a registration target would:
small dark dots of known sub-pixel position are painted on a real frame, the model scores the
frame with and without them, and the centre of each dot's anomaly (the difference of the two
maps) is compared with where the dot is. Their mean is the pipeline's offset; the scan subtracts
it from every defect position. Two frames of inference, once per scan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from flawscope.webscan.regions import peak_in

# Dots: dark (a pit), Gaussian of this sigma in pixels, spaced so their anomalies do not touch.
DOT_SIGMA = 2.0
DOT_DEPTH = 45.0
DOT_SPACING = 56


@dataclass(frozen=True)
class Registration:
    """The measured offset of a model's anomaly maps.

    Attributes:
        dx: mean (reported - true) column offset of a defect's anomaly centre, pixels.
        dy: the same along the rows.
        spread: standard deviation of the single dots' offsets (both axes pooled), pixels.
        dots: dots measured.
    """

    dx: float
    dy: float
    spread: float
    dots: int


def _dot_positions(height: int, width: int) -> list[tuple[float, float]]:
    """``(x, y)`` of the dots: a grid inside the frame, each at another sub-pixel phase of 8 px."""
    margin = DOT_SPACING
    ys = list(range(margin // 2 + 8, height - margin // 2 - 8, DOT_SPACING))
    xs = list(range(margin // 2 + 8, width - margin // 2 - 8, DOT_SPACING))
    points = []
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            k = i * len(xs) + j
            # Phases spread over a stride-8 cell in both axes (golden-ratio steps, no pattern).
            points.append((x + (k * 0.618 * 8.0) % 8.0, y + (k * 0.382 * 8.0) % 8.0))
    return points


def measure_offset(
    frame: np.ndarray, score_maps: Callable[[list[np.ndarray]], tuple[np.ndarray, ...]]
) -> Registration | None:
    """Measure the offset of ``score_maps``' anomaly maps on one real frame.

    Args:
        frame: a ``(rows, W)`` or ``(rows, W, 3)`` uint8 frame of the web (any content).
        score_maps: the model: images to their ``(rows, W)`` anomaly maps.

    Returns:
        The registration, or None when the frame is too small for four dots or no dot's
        anomaly could be located.
    """
    height, width = int(frame.shape[0]), int(frame.shape[1])
    points = _dot_positions(height, width)
    if len(points) < 4:
        return None
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    dots = np.zeros((height, width), np.float32)
    for x, y in points:
        dots -= DOT_DEPTH * np.exp(-(((xs - x) ** 2 + (ys - y) ** 2) / (2 * DOT_SIGMA**2)))
    marked = frame.astype(np.float32) + (dots[:, :, None] if frame.ndim == 3 else dots)
    marked = np.clip(np.rint(marked), 0, 255).astype(frame.dtype)
    plain, painted = score_maps([frame, marked])
    diff = np.asarray(painted, np.float64) - np.asarray(plain, np.float64)
    half = DOT_SPACING // 2 - 4
    offsets = []
    for x, y in points:
        box = (int(x) - half, int(y) - half, int(x) + half, int(y) + half)
        found = peak_in(diff, box)
        if found is not None:
            offsets.append((found[0] - x, found[1] - y))
    if not offsets:
        return None
    values = np.asarray(offsets)
    return Registration(
        float(values[:, 0].mean()), float(values[:, 1].mean()), float(values.std()), len(values)
    )
