"""Reading images from disk with one clear error per bad file (torch-free).

Supports PNG, JPEG, BMP and TIFF, 8- and 16-bit, grayscale and colour. Images are returned as
``(H, W)`` or ``(H, W, 3)`` RGB arrays of dtype uint8 or uint16; alpha is dropped.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
from PIL import Image, UnidentifiedImageError

from flawscope.errors import InputError

#: An image as the Python API takes it: an array, or the path of an image file.
ImageLike: TypeAlias = "np.ndarray | str | os.PathLike[str]"

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MIN_SIDE = 16
MAX_PIXELS = 16384 * 16384


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """True when the file name has an image suffix flawscope reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _reason(exc: Exception) -> str:
    """What a decoder said, for a user: its message without the exception's class name."""
    text = " ".join(str(exc).split())
    return text or "the decoder gave no reason"


def _check_size(path: Path, height: int, width: int) -> None:
    if min(height, width) < MIN_SIDE:
        raise InputError(path, f"image is {width}x{height} px; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if height * width > MAX_PIXELS:
        raise InputError(
            path, f"image is {width}x{height} px, over the {MAX_PIXELS // 1_000_000} megapixel limit"
        )


def _to_standard(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim == 3 and array.shape[2] == 2:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise InputError(path, f"unsupported image layout {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype in (np.int32, np.uint32, np.int16):
        array = np.clip(array, 0, 65535).astype(np.uint16)
    elif array.dtype in (np.float32, np.float64):
        high = float(np.nanmax(array)) if array.size else 0.0
        scale = 65535.0 if high > 1.0 else 1.0
        array = (np.clip(np.nan_to_num(array), 0, scale) / scale * 65535).astype(np.uint16)
    elif array.dtype not in (np.uint8, np.uint16):
        raise InputError(path, f"unsupported pixel type {array.dtype}")
    return np.ascontiguousarray(array)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            shape = page.shape
            height, width = (shape[0], shape[1]) if len(shape) >= 2 else (1, shape[0])
            if len(shape) == 3 and shape[0] in (3, 4) and shape[2] not in (3, 4):
                height, width = shape[1], shape[2]
            _check_size(path, int(height), int(width))
            try:
                array = page.asarray()
            except ValueError as exc:
                if "imagecodecs" not in str(exc):
                    raise
                # LZW/JPEG TIFFs (OpenCV's default) need the optional imagecodecs package in
                # tifffile; OpenCV's own libtiff decodes them.
                return _read_tiff_opencv(path)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"not a readable TIFF image ({_reason(exc)})") from None
    if array.ndim == 3 and array.shape[0] in (3, 4) and array.shape[2] not in (3, 4):
        array = np.moveaxis(array, 0, -1)
    return array


def _read_tiff_opencv(path: Path) -> np.ndarray:
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise InputError(path, "not a readable TIFF image (compression not supported)")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGB)
    return array


def _read_png16_colour(path: Path) -> np.ndarray:
    import cv2

    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None or array.ndim != 3:
        raise InputError(path, "corrupt or truncated 16-bit colour PNG")
    return cv2.cvtColor(array[:, :, :3], cv2.COLOR_BGR2RGB)


def _read_pillow(path: Path) -> np.ndarray:
    # One limit for every format: our own, checked from the header before decoding.
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                _check_size(path, height, width)
                if (
                    img.format == "PNG"
                    and any(str(t.args).endswith(";16B") for t in img.tile)
                    and (img.mode in ("RGB", "RGBA"))
                ):
                    # Pillow decodes 16-bit colour PNGs to 8 bits; OpenCV keeps all 16.
                    return _read_png16_colour(path)
                img.load()
                mode = img.mode
                if mode in ("I;16", "I;16B", "I;16L", "I"):
                    return np.asarray(img).astype(np.uint16 if mode != "I" else np.int32)
                if mode not in ("L", "RGB"):
                    return np.asarray(img.convert("RGB" if mode not in ("1", "P", "LA") else "L"))
                return np.asarray(img)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(path, f"image is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise InputError(path, "not a readable image (unknown format, or not an image at all)") from None
    except OSError as exc:
        raise InputError(path, f"corrupt or truncated image ({exc})") from None
    except Exception as exc:
        raise InputError(path, f"cannot decode image ({_reason(exc)})") from None


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one image file.

    Args:
        path: image file (PNG, JPEG, BMP, TIFF).

    Returns:
        ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 array (RGB order).

    Raises:
        InputError: naming the file, when it is missing, unreadable, corrupt, too small or too large.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file does not exist")
    if path.is_dir():
        raise InputError(path, "is a directory, not an image file")
    if not os.access(path, os.R_OK):
        raise InputError(path, "file is not readable (permission denied)")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    array = _read_tiff(path) if path.suffix.lower() in (".tif", ".tiff") else _read_pillow(path)
    return _to_standard(array, path)


def read_mask(path: str | os.PathLike[str], shape: tuple[int, int]) -> np.ndarray:
    """Read a binary ground-truth mask and check that it fits its image.

    Args:
        path: mask file; any pixel > 0 is defective.
        shape: ``(H, W)`` of the image the mask belongs to.

    Returns:
        ``(H, W)`` bool array.

    Raises:
        InputError: when the mask is unreadable or its size differs from the image's.
    """
    mask = read_image(path)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    if mask.shape != tuple(shape):
        raise InputError(
            path, f"mask is {mask.shape[1]}x{mask.shape[0]} px but its image is {shape[1]}x{shape[0]} px"
        )
    return mask > 0


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_array(image: np.ndarray) -> str:
    """SHA-256 of an image array's shape, dtype and pixels (for images that never were files)."""
    digest = hashlib.sha256(f"{image.shape}|{image.dtype}|".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def is_path(item: object) -> bool:
    """True for a file path (``str`` or ``os.PathLike``), as opposed to an image array."""
    return isinstance(item, str | os.PathLike)


def as_image(item: ImageLike) -> np.ndarray:
    """The pixels of an image given as an array or as a file path (read with :func:`read_image`).

    Raises:
        InputError: naming the file, when a path cannot be read.
    """
    return read_image(item) if is_path(item) else item  # type: ignore[arg-type,return-value]


def as_images(items: Sequence[ImageLike]) -> list[np.ndarray]:
    """:func:`as_image` of each item (a single path or array is refused: give a list)."""
    if is_path(items) or isinstance(items, np.ndarray):
        raise InputError("images", "expected a list of images or file paths, got a single one")
    return [as_image(item) for item in items]
