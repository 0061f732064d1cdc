"""Tiling: images far larger than the canvas inspected at their own resolution, tile by tile.

A 12-megapixel image squeezed onto a 256-pixel canvas shrinks a 20-pixel defect below one pixel.
With tiling (:attr:`~flawscope.data.preprocess.Preprocessing.tile` > 0) the image is cut into
overlapping ``tile x tile`` squares at its own resolution (the canvas is one tile), every tile of
every image in a call goes through the network in batches of ``batch`` tiles (so a batch can hold
tiles of several images, and the cost grows with the area, not the number of images), and each
tile's patch scores are put back into one stride-8 grid per image, blended with weights that fall
towards the tile's edges (where the backbone sees padding, not context) so the stitched map has
no seams. The map is then finished like any other: resized to the image and Gaussian-smoothed.

With ``tile_scale`` s != 1 the image is first resized by s (bilinear up, area down) and tiled at
that size; its map is resized back (area) to the image, so a 2x scale puts a feature cell every
4 source pixels for thin flaws, at 4x the tiles.

Tile origins are multiples of the stride: the image is first mirror-padded to a multiple of 32
(at most 31 pixels, cut away again at the end), so each tile's cells fall exactly on the grid.
Training, evaluation and the torch-free runtime all cut, stitch and finish with this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from flawscope.data.preprocess import (
    CANVAS_MULTIPLE,
    MAP_SIGMA,
    Preprocessing,
    check_image,
    image_score,
    to_canvas,
)
from flawscope.errors import InputError

STRIDE = 8
# Bytes held per image pixel while a tiled image is scored: the padded source (up to 6 bytes
# for 16-bit colour), the resized and the smoothed map (float32 each) and slack for the copies.
BYTES_PER_PIXEL = 20


@dataclass(frozen=True)
class TileLayout:
    """Where the tiles of one image lie.

    Attributes:
        height: the image's height once resized by the tile scale (its own with scale 1).
        width: likewise.
        padded_height: after mirror padding to a multiple of 32.
        padded_width: likewise.
        origins: ``(top, left)`` of each tile in the padded image (multiples of 8).
        source_height: the image's own height (0: the same as ``height``).
        source_width: the image's own width (0: the same as ``width``).
    """

    height: int
    width: int
    padded_height: int
    padded_width: int
    origins: tuple[tuple[int, int], ...]
    source_height: int = 0
    source_width: int = 0

    @property
    def scaled(self) -> bool:
        """Whether the image is resized before it is tiled."""
        return (self.source_height, self.source_width) not in ((0, 0), (self.height, self.width))


def scaled_size(shape: tuple[int, ...], pre: Preprocessing) -> tuple[int, int]:
    """``(height, width)`` of an image of ``shape`` once resized by the tile scale."""
    height, width = int(shape[0]), int(shape[1])
    if pre.tile_scale == 1.0:
        return height, width
    return max(1, round(height * pre.tile_scale)), max(1, round(width * pre.tile_scale))


def _starts(length: int, tile: int, step: int) -> list[int]:
    """Tile starts along one axis: every ``step`` pixels, the last one flush with the end."""
    starts = list(range(0, length - tile + 1, step))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def tile_step(pre: Preprocessing) -> int:
    """Pixels between tile origins: ``tile * (1 - overlap)`` rounded down to the stride (>= 8)."""
    return max(STRIDE, int(pre.tile * (1.0 - pre.overlap)) // STRIDE * STRIDE)


def layout(shape: tuple[int, ...], pre: Preprocessing) -> TileLayout:
    """The tiles of an image of ``shape`` ``(H, W[, C])``.

    Raises:
        InputError: when the image is smaller than one tile.
    """
    height, width = scaled_size(shape, pre)
    if height < pre.tile or width < pre.tile:
        scaled = (
            f" (resized by the tile scale {pre.tile_scale:g} to {width}x{height})"
            if pre.tile_scale != 1
            else ""
        )
        raise InputError(
            "preprocessing.tile",
            f"a tile of {pre.tile} px is larger than the {shape[1]}x{shape[0]} px image{scaled}: "
            "use a smaller tile or no tiling for images this small",
        )
    ph = -(-height // CANVAS_MULTIPLE) * CANVAS_MULTIPLE
    pw = -(-width // CANVAS_MULTIPLE) * CANVAS_MULTIPLE
    step = tile_step(pre)
    rows, cols = _starts(ph, pre.tile, step), _starts(pw, pre.tile, step)
    origins = tuple((top, left) for top in rows for left in cols)
    return TileLayout(height, width, ph, pw, origins, int(shape[0]), int(shape[1]))


def available_memory() -> int | None:
    """Bytes available to a new allocation (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(shape: tuple[int, ...], tile_scale: float = 1.0) -> None:
    """Refuse, before any work, an image whose tiled scoring would not fit in memory.

    Args:
        shape: the image's ``(H, W[, C])``.
        tile_scale: the magnification it is tiled at (the memory grows with its square).

    Raises:
        InputError: naming the image size, the estimate and what is available.
    """
    pixels = int(shape[0]) * int(shape[1])
    need = int(pixels * BYTES_PER_PIXEL * max(1.0, tile_scale) ** 2)
    have = available_memory()
    if have is not None and need > 0.5 * have:
        raise InputError(
            "image",
            f"{shape[1]}x{shape[0]} px ({pixels / 1e6:.0f} MP) needs about {need / 2**30:.1f} GiB to "
            f"score in tiles but {have / 2**30:.1f} GiB are available: split the image first",
        )


def _padded(image: np.ndarray, lay: TileLayout) -> np.ndarray:
    if lay.scaled:
        larger = lay.height > lay.source_height
        image = cv2.resize(
            image, (lay.width, lay.height), interpolation=cv2.INTER_LINEAR if larger else cv2.INTER_AREA
        )
    bottom, right = lay.padded_height - lay.height, lay.padded_width - lay.width
    if not bottom and not right:
        return image
    return cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_REFLECT_101)


def tile_batches(
    images: Sequence[np.ndarray], pre: Preprocessing, batch: int
) -> Iterator[tuple[np.ndarray, list[tuple[int, int, int]]]]:
    """The tiles of all ``images``, ``batch`` at a time, across image boundaries.

    Yields:
        ``(B, 3, tile, tile)`` float32 network inputs and, for each, ``(image index, top, left)``.
    """
    tile_pre = Preprocessing(pre.tile, pre.tile, "stretch", pre.mean, pre.std)  # one tile, no scale
    pending: list[np.ndarray] = []
    where: list[tuple[int, int, int]] = []
    for index, raw in enumerate(images):
        image = check_image(raw)
        check_memory(image.shape, pre.tile_scale)
        lay = layout(image.shape, pre)
        padded = _padded(image, lay)
        for top, left in lay.origins:
            crop = padded[top : top + pre.tile, left : left + pre.tile]
            pending.append(to_canvas(crop, tile_pre)[0])  # exactly one tile: normalised, not resized
            where.append((index, top, left))
            if len(pending) == batch:
                yield np.stack(pending), where
                pending, where = [], []
    if pending:
        yield np.stack(pending), where


def blend_weights(cells: int) -> np.ndarray:
    """``(cells, cells)`` stitching weights: 1 in the middle, falling linearly to 0.05 at the edges."""
    ramp = np.minimum(np.arange(cells) + 0.5, cells - np.arange(cells) - 0.5) / (cells / 2)
    axis = np.clip(ramp * 2.0, 0.05, 1.0).astype(np.float32)  # flat over the central half
    return axis[:, None] * axis[None, :]


class Stitcher:
    """Accumulates tiles' ``(h, w)`` patch scores into each image's stride-8 grid."""

    def __init__(self, layouts: Sequence[TileLayout], tile: int):
        self.layouts = list(layouts)
        self.cells = tile // STRIDE
        self.weights = blend_weights(self.cells)
        shapes = [(lay.padded_height // STRIDE, lay.padded_width // STRIDE) for lay in layouts]
        self.sums = [np.zeros(shape, np.float32) for shape in shapes]
        self.totals = [np.zeros_like(s) for s in self.sums]

    def add(self, scores: np.ndarray, where: Sequence[tuple[int, int, int]]) -> None:
        """Add ``(B, h, w)`` tile scores at their ``(image, top, left)``."""
        c = self.cells
        for grid, (index, top, left) in zip(scores, where, strict=True):
            r, k = top // STRIDE, left // STRIDE
            self.sums[index][r : r + c, k : k + c] += grid * self.weights
            self.totals[index][r : r + c, k : k + c] += self.weights

    def grids(self) -> list[np.ndarray]:
        """Each image's blended ``(H_pad / 8, W_pad / 8)`` grid."""
        return [s / np.maximum(t, 1e-12) for s, t in zip(self.sums, self.totals, strict=True)]


def finish_tiled(grid: np.ndarray, lay: TileLayout, pre: Preprocessing) -> tuple[float, np.ndarray]:
    """A stitched grid to the image score and its ``(H, W)`` map (resize, then smooth, then crop).

    With a tile scale the score is taken on the map at the scaled size (where it was fitted and
    calibrated) and the map is then resized to the image's own size.
    """
    full = cv2.resize(grid, (lay.padded_width, lay.padded_height), interpolation=cv2.INTER_LINEAR)
    smooth = cv2.GaussianBlur(full, (0, 0), sigmaX=MAP_SIGMA, sigmaY=MAP_SIGMA, borderType=cv2.BORDER_REFLECT)
    inner = np.ascontiguousarray(smooth[: lay.height, : lay.width])
    score = image_score(inner, pre.score_area)
    if lay.scaled:
        smaller = lay.source_height < lay.height
        inner = cv2.resize(
            inner,
            (lay.source_width, lay.source_height),
            interpolation=cv2.INTER_AREA if smaller else cv2.INTER_LINEAR,
        )
    return score, inner


def score_tiled(
    images: Sequence[np.ndarray],
    pre: Preprocessing,
    run: Callable[[np.ndarray], np.ndarray],
    batch: int,
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Image scores and full-resolution maps of ``images``, scored tile by tile.

    Args:
        images: ``(H, W[, 3])`` arrays, each at least one tile large.
        pre: preprocessing with ``tile > 0``.
        run: ``(B, 3, tile, tile)`` inputs to ``(B, tile / 8, tile / 8)`` patch scores.
        batch: tiles per call of ``run``.

    Returns:
        ``(N,)`` float32 scores and the N ``(H, W)`` float32 maps.

    Raises:
        InputError: for an image smaller than a tile or too large for memory.
    """
    checked = [check_image(im) for im in images]
    layouts = [layout(im.shape, pre) for im in checked]
    stitcher = Stitcher(layouts, pre.tile)
    for inputs, where in tile_batches(checked, pre, batch):
        stitcher.add(np.asarray(run(inputs), dtype=np.float32), where)
    finished = [finish_tiled(g, lay, pre) for g, lay in zip(stitcher.grids(), layouts, strict=True)]
    return np.asarray([f[0] for f in finished], dtype=np.float32), tuple(f[1] for f in finished)
