"""Pictures for the web app: paths kept inside the image store, thumbnails, heat layers, uploads, masks.

Every file the app serves or writes is resolved inside the image store's root; a path that leads
out of it (``..``, an absolute path elsewhere, a symbolic link pointing out) is refused. Uploads
are checked from their header before any pixel is decoded (format, pixel count), so a
decompression bomb is refused without the memory it would take.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from flawscope.data.imageio import MIN_SIDE, read_image
from flawscope.decide.regions import find_regions
from flawscope.errors import InputError
from flawscope.types import Region

UPLOAD_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
THUMB_SIDE = 240
DISPLAY_SIDE = 1280  # long side of a part's picture on a page (larger images: a JPEG of this size)
# Heat layer: one strong colour (seen on parts of any colour), opaque where the map is highest.
HEAT_RGB = (255, 32, 200)
HEAT_ALPHA = 0.75


class StorePathError(InputError):
    """A path that does not stay inside the image store."""


def inside_store(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """The real path of ``path`` (relative to the store's root, or absolute), if it stays inside the root.

    Raises:
        StorePathError: the path leads out of the store (``..``, another folder, a link out).
    """
    base = Path(root).resolve()
    text = os.fspath(path)
    if "\x00" in text:
        raise StorePathError(text[:200], "a path cannot contain a NUL character")
    candidate = Path(text)
    if not candidate.is_absolute():
        if ".." in candidate.parts:
            raise StorePathError(text[:200], "a path inside the image store cannot contain '..'")
        candidate = base / candidate
    real = candidate.resolve()
    if not real.is_relative_to(base):
        raise StorePathError(text[:200], f"is outside the image store {base}")
    return real


def to_display(image: np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB picture of a stored image (16-bit images are stretched to their range)."""
    if image.dtype == np.uint16:
        low, high = int(image.min()), int(image.max())
        scale = 255.0 / max(1, high - low)
        image = ((image.astype(np.float32) - low) * scale).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


def heat_rgba(anomaly_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A transparent heat layer ``(H, W, 4)`` uint8 RGBA for a kept map (1.0 = reject threshold).

    The layer shows where the map is highest: it fades in over the top 40% of the part's own peak,
    and never below 0.6 of the reject threshold, so a borderline part's hot spot is visible while
    a clean part shows nothing.

    Args:
        anomaly_map: ``(h, w)`` float32 map divided by the reject threshold.
        size: ``(width, height)`` of the picture it will lie on.
    """
    amap = cv2.resize(anomaly_map.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    top = max(float(amap.max()), 1.0)
    low = 0.6 * top
    alpha = np.clip((amap - low) / (top - low), 0.0, 1.0) * HEAT_ALPHA
    rgba = np.empty((*amap.shape, 4), np.uint8)
    rgba[:, :, :3] = HEAT_RGB
    rgba[:, :, 3] = (alpha * 255).astype(np.uint8)
    return rgba


def blend(picture: np.ndarray, layer: np.ndarray) -> np.ndarray:
    """A picture with an RGBA layer laid over it (same size)."""
    alpha = layer[:, :, 3:4].astype(np.float32) / 255.0
    mixed = picture.astype(np.float32) * (1.0 - alpha) + layer[:, :, :3].astype(np.float32) * alpha
    return mixed.astype(np.uint8)


def encode(picture: np.ndarray, fmt: str = ".jpg", quality: int = 82) -> bytes:
    """JPEG (of ``quality``) or PNG bytes of an RGB or RGBA uint8 picture."""
    if picture.ndim == 3 and picture.shape[2] == 4:
        pixels = cv2.cvtColor(picture, cv2.COLOR_RGBA2BGRA)
    else:
        pixels = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, data = cv2.imencode(fmt, pixels, params)
    if not ok:
        raise ValueError(f"cannot encode a {picture.shape} picture as {fmt}")
    return data.tobytes()


def fit(picture: np.ndarray, side: int) -> np.ndarray:
    """The picture shrunk so that its long side is at most ``side`` (never enlarged)."""
    height, width = picture.shape[:2]
    scale = side / max(height, width)
    if scale >= 1.0:
        return picture
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def thumbnail(image_path: Path, anomaly_map: np.ndarray | None, side: int = THUMB_SIDE) -> bytes:
    """A JPEG thumbnail of a stored image, with its heat layer when a map was kept.

    Raises:
        InputError: the image cannot be read.
    """
    picture = fit(to_display(read_image(image_path)), side)
    if anomaly_map is not None:
        picture = blend(picture, heat_rgba(anomaly_map, (picture.shape[1], picture.shape[0])))
    return encode(picture, ".jpg")


def read_upload(data: bytes, name: str, *, max_bytes: int, max_pixels: int) -> tuple[np.ndarray, str]:
    """Check and decode an uploaded image.

    Args:
        data: the file's bytes.
        name: its name as the client gave it (for messages only).
        max_bytes: largest file accepted.
        max_pixels: largest width x height accepted, checked from the header before decoding.

    Returns:
        ``(the image as flawscope reads it, the suffix of its format)``.

    Raises:
        InputError: empty, too large, not an image of a supported format, too many pixels, or corrupt.
    """
    label = name[:120] or "upload"
    if not data:
        raise InputError(label, "the file is empty")
    if len(data) > max_bytes:
        raise InputError(label, f"the file has {len(data):,} bytes; at most {max_bytes:,} are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (width, height) = img.format, img.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InputError(
            label,
            f"has more than {max_pixels / 1e6:.0f} megapixels: refused before decoding "
            "(a decompression bomb?)",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        fmt, width, height = None, 0, 0
    if fmt not in UPLOAD_FORMATS:
        raise InputError(label, "is not an image flawscope reads (PNG, JPEG, BMP or TIFF)")
    if width * height > max_pixels:
        raise InputError(
            label,
            f"is {width}x{height} px ({width * height / 1e6:.0f} megapixels); "
            f"at most {max_pixels / 1e6:.0f} megapixels are accepted",
        )
    if min(width, height) < MIN_SIDE:
        raise InputError(label, f"is {width}x{height} px; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    suffix = UPLOAD_FORMATS[fmt]
    # flawscope's reader takes files: decode the checked bytes from a private temporary file.
    handle, temp = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        try:
            image = read_image(temp)
        except InputError as exc:
            raise InputError(label, exc.problem) from None
    finally:
        Path(temp).unlink(missing_ok=True)
    return image, suffix


def mask_from_polygons(polygons: list[list[list[float]]], width: int, height: int) -> np.ndarray:
    """Rasterise a reviewer's drawing into a mask of the image's size.

    Args:
        polygons: each a list of ``[x, y]`` points in image fractions (0..1), at least 3 points.
        width: image width in pixels.
        height: image height in pixels.

    Returns:
        ``(height, width)`` uint8 mask, 255 inside the drawing.

    Raises:
        InputError: a polygon with fewer than 3 points, or a point outside the image.
    """
    mask = np.zeros((height, width), np.uint8)
    for n, polygon in enumerate(polygons):
        if len(polygon) < 3:
            raise InputError(f"regions[{n}]", "a drawn region needs at least 3 points")
        points = np.asarray(polygon, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
            raise InputError(f"regions[{n}]", "points must be [x, y] pairs of numbers")
        if points.min() < -0.01 or points.max() > 1.01:
            raise InputError(f"regions[{n}]", "points must lie on the image (fractions from 0 to 1)")
        pixels = np.round(np.clip(points, 0, 1) * [width - 1, height - 1]).astype(np.int32)
        cv2.fillPoly(mask, [pixels], 255)
    return mask


def mask_regions(mask: np.ndarray) -> tuple[Region, ...]:
    """The connected regions of a drawn mask (peak 1.0), largest first."""
    return find_regions((mask > 0).astype(np.float32), 0.5, max_regions=50)


def write_png_atomic(path: Path, picture: np.ndarray) -> None:
    """Write a PNG that is either complete or absent (temporary file, fsync, rename).

    Raises:
        OSError: it cannot be written.
    """
    ok, data = cv2.imencode(".png", picture)
    if not ok:
        raise OSError(f"cannot encode {path.name} as PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data.tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)
