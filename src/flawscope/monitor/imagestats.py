"""Per-part image statistics that tell a dimming lamp, a lost focus or a new material from a good day.

Computed on every part in the runtime, so they must cost next to nothing: the image is sampled on
a regular grid of at most :data:`MAX_PIXELS` pixels (every ``s``-th row and column; a 256 x 256
part is read whole) and a handful of OpenCV reductions run on that grid.

Each statistic is on a log scale where it is a ratio (brightness, contrast, sharpness, colour
balance), so that a multiplicative change (the lamp at 85%) is a shift of the same size on every
part, and the statistics are closer to normal than the raw ratios, which is what the control
charts assume.

* ``brightness``: log of the mean grey level (as a fraction of the pixel type's full scale).
* ``contrast``: log of the grey levels' standard deviation over the mean (a dimmer lamp scales
  both, so contrast does not move with brightness alone).
* ``sharpness``: log of the Laplacian's standard deviation over the grey levels' standard
  deviation: the share of fine detail, which a blur lowers and a rougher texture raises, and
  which does not move with brightness or overall contrast.
* ``colour_rg`` / ``colour_bg``: log of the red / blue channel mean over the green one (0 for
  grey images, where the charts of these two are left out).
* ``position_x`` / ``position_y``: the centre of the fine detail (Laplacian energy) as a fraction
  of the width / height: where the part sits in the frame. Only charted for models that compare
  every position with its own statistics (PaDiM); a nearest-neighbour model does not care.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Names of the statistics, in the order of :func:`image_stats`' output.
STAT_NAMES: tuple[str, ...] = (
    "brightness",
    "contrast",
    "sharpness",
    "colour_rg",
    "colour_bg",
    "position_x",
    "position_y",
)
COLOUR_STATS = ("colour_rg", "colour_bg")
POSITION_STATS = ("position_x", "position_y")
#: Largest number of pixels the statistics read from one image (a 256 x 256 part is read whole).
MAX_PIXELS = 65_536
_EPS = 1e-6


def sample_stride(height: int, width: int, max_pixels: int = MAX_PIXELS) -> int:
    """The grid step that keeps at most ``max_pixels`` of an ``height`` x ``width`` image."""
    return max(1, math.ceil(math.sqrt(height * width / max_pixels)))


class ImageStatistics:
    """Computes :func:`image_stats`, reusing its work buffers between calls (not thread-safe).

    Fresh arrays of this size are mapped and faulted in by the allocator on every call, which made
    the statistics 3-4x slower than their arithmetic; one instance per thread keeps them.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _work(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        found = self._buffers.get(shape)
        if found is None:
            if len(self._buffers) > 8:  # parts of many sizes: keep the memory bounded
                self._buffers.clear()
            found = tuple(np.empty(shape, np.float32) for _ in range(3))  # type: ignore[assignment]
            self._buffers[shape] = found  # type: ignore[assignment]
        return found  # type: ignore[return-value]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The statistics of one image; see :func:`image_stats`."""
        full = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(image.dtype, 1.0)
        step = sample_stride(image.shape[0], image.shape[1])
        view = image[::step, ::step] if step > 1 else image
        if view.ndim == 3 and view.shape[2] == 1:
            view = view[:, :, 0]
        out = np.full(len(STAT_NAMES), np.nan)
        if view.size == 0:
            return out
        grey, lap, energy = self._work((view.shape[0], view.shape[1]))
        means: tuple[float, float, float] | None = None
        if view.ndim == 2:
            np.copyto(grey, view, casting="unsafe")
        else:
            rgb = view[:, :, :3].astype(np.float32)
            channel = cv2.mean(rgb)
            means = (channel[0], channel[1], channel[2])
            cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY, dst=grey)
        n = grey.size
        # Sums and dot products rather than cv2.meanStdDev, which is 5x slower on float32.
        flat = grey.reshape(-1)
        mean_v = float(flat.sum(dtype=np.float64)) / n
        std_v = math.sqrt(max(float(np.dot(flat, flat)) / n - mean_v * mean_v, 0.0))
        tiny = _EPS * full
        out[0] = math.log(max(mean_v, tiny) / full)
        out[1] = math.log(max(std_v, tiny) / max(mean_v, tiny))
        cv2.Laplacian(grey, cv2.CV_32F, dst=lap, ksize=1)
        cv2.multiply(lap, lap, dst=energy)
        columns = cv2.reduce(energy, 0, cv2.REDUCE_SUM, dtype=cv2.CV_64F).reshape(-1)
        rows = cv2.reduce(energy, 1, cv2.REDUCE_SUM, dtype=cv2.CV_64F).reshape(-1)
        total = float(columns.sum())
        # The Laplacian's mean is ~0 on any image, so its energy per pixel is its variance.
        out[2] = math.log(max(math.sqrt(total / n), tiny) / max(std_v, tiny))
        if means is None:
            out[3] = out[4] = 0.0
        else:
            red, green, blue = (max(m, tiny) for m in means)
            out[3] = math.log(red / green)
            out[4] = math.log(blue / green)
        if total > 0:
            out[5] = float(columns @ np.arange(columns.size)) / total / max(columns.size - 1, 1)
            out[6] = float(rows @ np.arange(rows.size)) / total / max(rows.size - 1, 1)
        return out


def image_stats(image: np.ndarray) -> np.ndarray:
    """The statistics of one image (see the module docstring).

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` RGB array, uint8, uint16 or float in [0, 1].

    Returns:
        ``(len(STAT_NAMES),)`` float64, in the order of :data:`STAT_NAMES`; NaN where a statistic
        is undefined (an empty image, or no detail at all for the positions).
    """
    return ImageStatistics()(image)
