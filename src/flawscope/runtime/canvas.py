"""The runtime's preprocessing shortcut: a per-pixel lookup table bit-identical to ``to_canvas``."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np

from flawscope.data.preprocess import Geometry, Preprocessing, check_image, to_canvas

log = logging.getLogger(__name__)


class CanvasLookup:
    """A bit-identical shortcut of :func:`~flawscope.data.preprocess.to_canvas` for the usual case.

    A uint8/uint16 image that already has the canvas size is not resized or padded, so each output
    value depends only on the pixel's level and channel. The tables are made by running
    ``to_canvas`` itself on images holding every level, and are used only after they reproduce
    ``to_canvas`` exactly on a random image; otherwise the shared code path is used. On a 256 x 256
    part this takes preprocessing from about 1.5-3 ms to 0.3 ms, a sizeable share of a 10 ms budget.
    """

    def __init__(self, config: Preprocessing):
        self.config = config
        self.tables: dict[str, np.ndarray | None] = {}
        self.geometry: Geometry | None = None

    def prepare(self, dtype: np.dtype[Any]) -> None:
        """Build the table for one pixel type now rather than on its first image."""
        self._table(dtype)

    def _table(self, dtype: np.dtype[Any]) -> np.ndarray | None:
        key = dtype.str
        if key not in self.tables:
            self.tables[key] = self._build(dtype)
        return self.tables[key]

    def _build(self, dtype: np.dtype[Any]) -> np.ndarray | None:
        height, width = self.config.height, self.config.width
        levels = int(np.iinfo(dtype).max) + 1
        table = np.empty((3, levels), dtype=np.float32)
        for start in range(0, levels, height * width):
            chunk = np.arange(start, min(start + height * width, levels))
            flat = np.zeros(height * width, dtype=dtype)
            flat[: len(chunk)] = chunk
            tensor, self.geometry = to_canvas(
                np.repeat(flat.reshape(height, width, 1), 3, axis=2), self.config
            )
            table[:, chunk] = tensor.reshape(3, -1)[:, : len(chunk)]
        probe = np.random.default_rng(0).integers(0, levels, (height, width, 3), dtype=dtype)
        expected, _ = to_canvas(probe, self.config)
        got = np.empty_like(expected)
        self._apply(table, probe, got)
        if not np.array_equal(got, expected):
            log.warning(
                "preprocessing is not a per-pixel lookup for %s images; using the general path", dtype
            )
            return None
        return table

    @staticmethod
    def _apply(table: np.ndarray, image: np.ndarray, out: np.ndarray) -> None:
        for channel in range(3):
            plane = image if image.ndim == 2 else image[:, :, channel]
            if plane.dtype == np.uint8:  # OpenCV's table lookup is ~3x faster than np.take
                cv2.LUT(plane, table[channel], dst=out[channel])
            else:  # cv2.LUT takes 8-bit images only
                np.take(table[channel], plane, out=out[channel])

    def fill(self, image: np.ndarray, out: np.ndarray) -> Geometry | None:
        """Write the network input of ``image`` into ``out`` ``(3, H, W)`` if the shortcut applies.

        Returns:
            The image's geometry, or None when the shortcut does not apply (nothing written).
        """
        if image.dtype not in (np.uint8, np.uint16) or image.shape[:2] != (
            self.config.height,
            self.config.width,
        ):
            return None
        image = check_image(image)
        table = self._table(image.dtype)
        if table is None:
            return None
        self._apply(table, image, out)
        return self.geometry
