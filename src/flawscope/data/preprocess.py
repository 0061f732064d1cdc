"""Preprocessing shared by training, evaluation and the torch-free runtime.

The same numpy/OpenCV code turns an image into the network input at training time and on the
line, so the deployed runtime sees exactly the tensor the model was fitted on.

Non-square parts: by default (``mode="fit_pad"``) an image is resized *keeping its aspect ratio*
to fit a fixed canvas, and the rest of the canvas is filled by mirroring the image. The canvas
itself follows the training set's median aspect ratio (see :func:`choose_canvas`), so a long
commutator is not squashed into a square and thin cracks keep their width. Anomaly maps are cut
back to the image's own area and resized to its original size. ``mode="stretch"`` (anomalib's
behaviour) is available for parts whose framing is fixed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from flawscope.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODES = ("fit_pad", "stretch")
# The canvas is a multiple of 32 so every stride (8, 16, 32) divides it and the TF "same"
# padding of the backbones is fixed, which keeps the ONNX graph static and export exact.
CANVAS_MULTIPLE = 32


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the network input; saved in every bundle's manifest.

    Attributes:
        height: canvas height in pixels (multiple of 32).
        width: canvas width in pixels (multiple of 32).
        mode: ``"fit_pad"`` (keep aspect, mirror-pad) or ``"stretch"``.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation.
        score_area: how an anomaly map becomes the image's score: 0 takes its peak; ``k > 0``
            the mean of its ``k`` highest values at canvas resolution (a robust peak: a single
            hot cell, as PatchCore gives at image borders, no longer decides the part alone;
            see benchmarks/RESULTS.md). Either way the score never exceeds the map's peak.
        tile: 0 scores the whole image on the canvas; ``t > 0`` (a multiple of 32, equal to
            the canvas) cuts it into ``t x t`` tiles at its own resolution
            (:mod:`flawscope.data.tiling`).
        overlap: share of a tile its neighbour overlaps, in ``[0, 1)``.
        tile_scale: a tiled image is resized by this factor before it is cut (2.0: each tile
            covers 128 x 128 source pixels magnified twice, so the stride-8 feature grid falls
            every 4 source pixels); its map is resized back to the image. 1.0: native pixels.
    """

    height: int = 256
    width: int = 256
    mode: str = "fit_pad"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    score_area: int = 0
    tile: int = 0
    overlap: float = 0.25
    tile_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError("preprocessing.mode", f"must be one of {MODES}, not {self.mode!r}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value < CANVAS_MULTIPLE or value % CANVAS_MULTIPLE:
                raise InputError(f"preprocessing.{name}", f"must be a multiple of 32 >= 32, not {value}")
        if isinstance(self.score_area, bool) or not isinstance(self.score_area, int) or self.score_area < 0:
            raise InputError(
                "preprocessing.score_area", f"must be a whole number >= 0, not {self.score_area!r}"
            )
        check_tiling(self.tile, self.overlap, tile_scale=self.tile_scale)
        if self.tile and (self.height, self.width) != (self.tile, self.tile):
            raise InputError(
                "preprocessing.tile", f"a tiled model's canvas is one tile, not {self.height}x{self.width}"
            )

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for the manifest."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Preprocessing:
        """Inverse of :meth:`to_dict`."""
        return cls(
            height=int(data["height"]),  # type: ignore[call-overload]
            width=int(data["width"]),  # type: ignore[call-overload]
            mode=str(data["mode"]),
            mean=tuple(float(v) for v in data["mean"]),  # type: ignore[arg-type, attr-defined]
            std=tuple(float(v) for v in data["std"]),  # type: ignore[arg-type, attr-defined]
            score_area=int(data.get("score_area", 0)),  # type: ignore[call-overload]
            tile=int(data.get("tile", 0)),  # type: ignore[call-overload]
            overlap=float(data.get("overlap", 0.25)),  # type: ignore[arg-type]
            tile_scale=float(data.get("tile_scale", 1.0)),  # type: ignore[arg-type]
        )


# Magnification of tiles: beyond 4x a tile holds less than a 64-px piece of a 256-px tile's view.
MAX_TILE_SCALE = 4.0


def check_tiling(
    tile: object, overlap: object, prefix: str = "preprocessing.", tile_scale: object = 1.0
) -> None:
    """Refuse a tile size that is not 0 or a multiple of 32, an overlap or a tile scale out of range.

    The overlap must lie in ``[0, 1)``, the tile scale in ``(0, 4]``.

    Raises:
        InputError: naming the field.
    """
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 0 or tile % CANVAS_MULTIPLE:
        raise InputError(f"{prefix}tile", f"must be 0 (no tiling) or a multiple of 32, not {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not 0 <= overlap < 1:
        raise InputError(
            f"{prefix}overlap",
            f"must be a share of the tile in [0, 1) (0.25 is 25%); {overlap!r} would never advance",
        )
    scale_ok = isinstance(tile_scale, int | float) and not isinstance(tile_scale, bool)
    if not scale_ok or not 0 < tile_scale <= MAX_TILE_SCALE:  # type: ignore[operator]
        raise InputError(
            f"{prefix}tile_scale",
            f"must be a magnification in (0, {MAX_TILE_SCALE:g}] (1 is native pixels, 2 doubles them), "
            f"not {tile_scale!r}",
        )


@dataclass(frozen=True)
class Geometry:
    """Where an image lies in the canvas, to map results back to its pixels.

    Attributes:
        height: original image height.
        width: original image width.
        top: first canvas row of the image.
        left: first canvas column of the image.
        inner_height: rows the image occupies in the canvas.
        inner_width: columns the image occupies in the canvas.
    """

    height: int
    width: int
    top: int
    left: int
    inner_height: int
    inner_width: int


def round_canvas(value: float) -> int:
    """Round a side length to the nearest multiple of 32 (at least 32)."""
    return max(CANVAS_MULTIPLE, round(value / CANVAS_MULTIPLE) * CANVAS_MULTIPLE)


def choose_canvas(
    sizes: Sequence[tuple[int, int]], short_side: int = 256, max_ratio: float = 4.0
) -> tuple[int, int]:
    """Pick a canvas ``(height, width)`` that follows the training images' median aspect ratio.

    Args:
        sizes: ``(height, width)`` of the training images.
        short_side: canvas size along its shorter side.
        max_ratio: cap on long side / short side.

    Returns:
        ``(height, width)``, both multiples of 32.
    """
    if not sizes:
        return round_canvas(short_side), round_canvas(short_side)
    aspect = float(np.median([h / w for h, w in sizes]))
    aspect = min(max(aspect, 1.0 / max_ratio), max_ratio)
    if aspect >= 1.0:
        return round_canvas(short_side * aspect), round_canvas(short_side)
    return round_canvas(short_side), round_canvas(short_side / aspect)


def _to_float_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        scaled = image.astype(np.float32) * (1.0 / 255.0)
    elif image.dtype == np.uint16:
        scaled = image.astype(np.float32) * (1.0 / 65535.0)
    elif image.dtype in (np.float32, np.float64):
        scaled = image.astype(np.float32)
    else:
        raise InputError("image", f"pixel type {image.dtype} is not supported (use uint8 or uint16)")
    if scaled.ndim == 2:
        scaled = np.repeat(scaled[:, :, None], 3, axis=2)
    return scaled


def check_image(image: object) -> np.ndarray:
    """Validate an in-memory image array and return it.

    Raises:
        InputError: for a wrong type, shape, channel count, dtype, size or non-finite values.
    """
    if not isinstance(image, np.ndarray):
        raise InputError("image", f"expected a numpy array, got {type(image).__name__}")
    # The same channel rules as reading a file: alpha is dropped (RGBA, gray + alpha).
    if image.ndim == 3 and image.shape[2] in (1, 2):
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise InputError("image", f"expected (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        raise InputError("image", f"pixel type {image.dtype} is not supported (use uint8 or uint16)")
    if min(image.shape[:2]) < 16:
        raise InputError("image", f"image is {image.shape[1]}x{image.shape[0]} px; at least 16x16 is needed")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise InputError("image", "contains NaN or infinite values")
    return image


def to_canvas(image: np.ndarray, config: Preprocessing) -> tuple[np.ndarray, Geometry]:
    """Resize/pad one image onto the canvas and normalise it.

    Args:
        image: ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 array.
        config: preprocessing settings.

    Returns:
        ``(3, canvas_h, canvas_w)`` float32 array and the image's geometry in the canvas.
    """
    image = check_image(image)
    geometry = geometry_of(image.shape, config)
    height = image.shape[0]
    rgb = _to_float_rgb(image)
    ch, cw = config.height, config.width
    inner_h, inner_w, top, left = geometry.inner_height, geometry.inner_width, geometry.top, geometry.left
    interp = cv2.INTER_AREA if inner_h < height else cv2.INTER_LINEAR
    resized = cv2.resize(rgb, (inner_w, inner_h), interpolation=interp)
    if (inner_h, inner_w) != (ch, cw):
        # Mirror padding continues the part's texture, so the padded band looks normal to the
        # backbone and adds no edge response next to the image; it is cut away afterwards.
        resized = cv2.copyMakeBorder(
            resized, top, ch - inner_h - top, left, cw - inner_w - left, cv2.BORDER_REFLECT_101
        )
    mean = np.asarray(config.mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(config.std, dtype=np.float32)
    normalised = (resized - mean) * inv_std
    tensor = np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)
    return tensor, geometry


def geometry_of(shape: tuple[int, ...], config: Preprocessing) -> Geometry:
    """Where an image of this ``(H, W[, C])`` shape lies in the canvas (what :func:`to_canvas` does)."""
    height, width = int(shape[0]), int(shape[1])
    ch, cw = config.height, config.width
    if config.mode == "stretch":
        inner_h, inner_w = ch, cw
    else:
        scale = min(ch / height, cw / width)
        inner_h = min(ch, max(1, round(height * scale)))
        inner_w = min(cw, max(1, round(width * scale)))
    return Geometry(height, width, (ch - inner_h) // 2, (cw - inner_w) // 2, inner_h, inner_w)


def to_batch(images: Sequence[np.ndarray], config: Preprocessing) -> tuple[np.ndarray, list[Geometry]]:
    """Stack several images into one ``(N, 3, H, W)`` float32 batch."""
    tensors, geometries = [], []
    for image in images:
        tensor, geometry = to_canvas(image, config)
        tensors.append(tensor)
        geometries.append(geometry)
    if not tensors:
        return np.zeros((0, 3, config.height, config.width), dtype=np.float32), []
    return np.stack(tensors), geometries


def canvas_valid_mask(geometries: Sequence[Geometry], config: Preprocessing, stride: int) -> np.ndarray:
    """``(N, H/stride, W/stride)`` bool: feature cells whose centre lies inside the image."""
    gh, gw = config.height // stride, config.width // stride
    centres_y = (np.arange(gh) + 0.5) * stride
    centres_x = (np.arange(gw) + 0.5) * stride
    masks = np.zeros((len(geometries), gh, gw), dtype=bool)
    for i, g in enumerate(geometries):
        rows = (centres_y >= g.top) & (centres_y < g.top + g.inner_height)
        cols = (centres_x >= g.left) & (centres_x < g.left + g.inner_width)
        masks[i] = rows[:, None] & cols[None, :]
    return masks


def inner_cells(valid: np.ndarray, margin: int) -> np.ndarray:
    """``(N, h, w)`` bool: the cells of ``valid`` at least ``margin`` cells from any cell outside it.

    The canvas edge does not count as outside: only the padding does, so ``margin`` 1 leaves out
    the band of cells along the seam where an image meets its mirrored padding (a cell there sees
    the image folded back on itself). An image with no such cell keeps all of ``valid``, and an
    image with no valid cell at all the whole canvas.

    Args:
        valid: ``(N, h, w)`` bool, cells inside each image (:func:`canvas_valid_mask`).
        margin: cells to leave out along the padding (0: ``valid`` itself).
    """
    valid = np.asarray(valid, dtype=bool)
    inner = valid.copy()
    if margin > 0:
        h, w = valid.shape[1:]
        padded = np.pad(valid, ((0, 0), (margin, margin), (margin, margin)), constant_values=True)
        for dy in range(2 * margin + 1):
            for dx in range(2 * margin + 1):
                inner &= padded[:, dy : dy + h, dx : dx + w]
    empty = ~inner.any(axis=(1, 2))
    inner[empty] = valid[empty]
    inner[~inner.any(axis=(1, 2))] = True
    return inner


# Gaussian smoothing of the anomaly map, as in PatchCore and PaDiM (sigma in canvas pixels).
MAP_SIGMA = 4.0


@functools.lru_cache(maxsize=32)
def smoothing_matrix(cells: int, pixels: int, sigma: float) -> np.ndarray:
    """``(pixels, cells)``: one axis of "resize the grid to the canvas, then Gaussian-blur it".

    Both steps are linear and separable (OpenCV's bilinear resize and its Gaussian blur with
    reflected borders), so the 2-D result is ``M_y @ grid @ M_x.T``. Each column is OpenCV
    itself applied to a unit vector, so the matrices reproduce its kernels and borders exactly;
    two small products replace a 33-tap blur over the whole canvas (map finishing 0.36 -> 0.10
    ms per 256 x 256 map on this CPU; it was the largest cost of the runtime outside ONNX Runtime).
    """
    basis = np.eye(cells, dtype=np.float32)  # row i: unit vector i along the axis
    rows = cv2.resize(basis, (pixels, cells), interpolation=cv2.INTER_LINEAR)
    # One row at a time: the vertical pass of a one-row image with reflected borders is the identity.
    blurred = np.concatenate(
        [
            cv2.GaussianBlur(row[None, :], (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
            for row in rows
        ]
    )
    matrix = np.ascontiguousarray(blurred.T)
    matrix.flags.writeable = False  # shared by every call through the cache
    return matrix


def image_score(inner: np.ndarray, area: int) -> float:
    """Image score from its smoothed map: the peak (``area`` 0) or the mean of its ``area`` highest values."""
    if area <= 1 or inner.size <= 1:
        return float(inner.max())
    flat = inner.reshape(-1)
    k = min(area, flat.size)
    return float(np.partition(flat, flat.size - k)[flat.size - k :].mean(dtype=np.float64))


def finish_map(patch_map: np.ndarray, geometry: Geometry, config: Preprocessing) -> tuple[float, np.ndarray]:
    """Turn a coarse patch-score map into the image score and a full-resolution anomaly map.

    The map is resized to the canvas and smoothed (:data:`MAP_SIGMA`), computed as two matrix
    products restricted to the image's part of the canvas (:func:`smoothing_matrix`).

    Args:
        patch_map: ``(h, w)`` float32 scores on the canvas grid (any stride).
        geometry: where the image lies in the canvas.
        config: preprocessing settings.

    Returns:
        The image score (from the smoothed map inside the image, :attr:`Preprocessing.score_area`)
        and the ``(H, W)`` float32 anomaly map at the image's original size.
    """
    grid = np.asarray(patch_map, dtype=np.float32)
    rows = smoothing_matrix(grid.shape[0], config.height, MAP_SIGMA)
    cols = smoothing_matrix(grid.shape[1], config.width, MAP_SIGMA)
    rows = rows[geometry.top : geometry.top + geometry.inner_height]
    cols = cols[geometry.left : geometry.left + geometry.inner_width]
    inner = (rows @ grid) @ cols.T
    score = image_score(inner, config.score_area)
    full = cv2.resize(inner, (geometry.width, geometry.height), interpolation=cv2.INTER_LINEAR)
    return score, full


@functools.cache
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def finish_maps(
    patch_maps: np.ndarray | Sequence[np.ndarray], geometries: Sequence[Geometry], config: Preprocessing
) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """:func:`finish_map` over a batch: ``(N,)`` float32 image scores and the N anomaly maps.

    The matrix products run with BLAS on one thread. They are small, and the inference engine
    (ONNX Runtime or torch) owns the cores: with numpy's multi-threaded OpenBLAS between two
    inference calls, its spinning threads and the engine's fought over the two cores (a loop of
    batch-8 trunk calls and map products ran at 66 images/s, 170 with BLAS on one thread).

    Args:
        patch_maps: ``(N, h, w)`` patch scores (an array or N arrays).
        geometries: where each image lies in the canvas.
        config: preprocessing settings.
    """
    with _blas_controller().limit(limits=1, user_api="blas"):
        finished = [finish_map(grid, g, config) for grid, g in zip(patch_maps, geometries, strict=True)]
    return np.asarray([f[0] for f in finished], dtype=np.float32), tuple(f[1] for f in finished)
