"""Image storage of the line: every inspected part's image, under ``<root>/<UTC date>/<part id>.<ext>``.

When the frame came from a file (folder, watched folder, simulator) that file is copied byte for
byte, keeping its format; otherwise the pixels are written as PNG. A stored image is never
overwritten: a second image of the same part on the same day gets ``-1``, ``-2``... appended. Each
file is written under a temporary name and linked into place, so a crash never leaves a partial
image under a part's name.

The anomaly map of a part that goes to review (or fails) is kept beside its image, at
``<date>/maps/<image file name>.png``: the map divided by the reject threshold (1.0 = at the reject
level), at most 512 px on its long side, as a 16-bit PNG of ``log2(1 + value) * MAP_UNIT`` (a
relative step of 2e-4, values up to 65,000 times the threshold). Reviewers see it without the model
being run again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from flawscope.data.imageio import sha256_array, sha256_file
from flawscope.errors import InputError
from flawscope.types import Frame

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 150
# PNG level 1: several times faster to write than the default, a little larger on disk.
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1]
#: 16-bit steps per doubling of ``1 + value`` in a kept map (value 1.0 = the reject threshold).
MAP_UNIT = 4096
#: Long side of a kept map; anomaly maps are upsampled from a coarse patch grid, so little is lost.
MAP_SIDE = 512
MAPS_FOLDER = "maps"


def safe_name(part_id: str) -> str:
    """A file name for a part id: unsafe characters become ``_``, at most 150 characters."""
    name = _UNSAFE.sub("_", part_id).strip("._")[:MAX_NAME]
    return name or "part"


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W)`` or ``(H, W, 3)`` RGB uint8/uint16 image.

    Raises:
        ValueError: when OpenCV cannot encode it.
    """
    pixels = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, data = cv2.imencode(".png", pixels, PNG_PARAMS)
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {image.shape} {image.dtype} image as PNG")
    return data.tobytes()


def source_file(frame: Frame) -> Path | None:
    """The image file a frame was read from, if it still exists."""
    path = frame.meta.get("path") if frame.meta else None
    if not path:
        return None
    candidate = Path(path)
    return candidate if candidate.is_file() else None


def image_sha256(frame: Frame) -> str:
    """SHA-256 of the frame's source file, or of its pixels; ``""`` when there is neither."""
    path = source_file(frame)
    if path is not None:
        try:
            return sha256_file(path)
        except OSError as exc:
            logger.warning("part %s: cannot hash %s (%s); hashing the pixels", frame.part_id, path, exc)
    return sha256_array(frame.image) if frame.image is not None else ""


def _write_new(target: Path, data: bytes) -> bool:
    """Write a file that must not exist yet; False when the name is taken."""
    try:
        handle = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return True


class ImageStore:
    """Writes part images under a root folder.

    Args:
        root: the storage folder (created if missing).

    Raises:
        InputError: when the folder cannot be created or written.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise InputError(self.root, f"image store is not writable ({exc.strerror or exc})") from None

    def _place(self, folder: Path, stem: str, suffix: str, data: bytes) -> Path:
        handle, temp = tempfile.mkstemp(dir=folder, prefix=".incoming-", suffix=suffix)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            for n in range(10_000):
                target = folder / f"{stem}{'' if n == 0 else f'-{n}'}{suffix}"
                try:
                    os.link(temp, target)  # fails if the name is taken: never overwrite an image
                except FileExistsError:
                    continue
                except OSError:
                    # No hard links (FAT, some network shares): claim the name, then write in place.
                    if not _write_new(target, data):
                        continue
                return target
            raise OSError(f"{folder}: 10,000 images of part {stem} already stored today")
        finally:
            Path(temp).unlink(missing_ok=True)

    def put(self, frame: Frame) -> tuple[str, str]:
        """Store one frame's image.

        Returns:
            ``(path of the stored file, SHA-256 of its bytes)``, or ``("", "")`` when the frame has
            neither pixels nor a source file (nothing to store).

        Raises:
            OSError: when the image cannot be written (disk full, permissions, folder gone).
            ValueError: when the pixels cannot be encoded.
        """
        original = source_file(frame)
        if original is not None:
            data = original.read_bytes()
            suffix = original.suffix.lower() or ".png"
        elif frame.image is not None:
            data = encode_png(frame.image)
            suffix = ".png"
        else:
            return "", ""
        day = datetime.fromtimestamp(frame.timestamp, UTC).strftime("%Y-%m-%d")
        folder = self.root / day
        folder.mkdir(exist_ok=True)
        target = self._place(folder, safe_name(frame.part_id), suffix, data)
        return str(target), hashlib.sha256(data).hexdigest()


def map_path(image_path: str | os.PathLike[str]) -> Path:
    """Where the kept anomaly map of a stored image lives (whether or not it was kept)."""
    image = Path(image_path)
    return image.parent / MAPS_FOLDER / f"{image.name}.png"


def encode_map(anomaly_map: np.ndarray, reject: float) -> bytes:
    """A map as the 16-bit PNG kept in the store.

    Args:
        anomaly_map: ``(H, W)`` float map on the score's scale.
        reject: the reject threshold on that scale (the map is divided by it).

    Raises:
        ValueError: the map is not 2-D, or the threshold is not a positive number.
    """
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.ndim != 2 or amap.size == 0:
        raise ValueError(f"an anomaly map must be a non-empty (H, W) array, got shape {amap.shape}")
    if not (np.isfinite(reject) and reject > 0):
        raise ValueError(f"the reject threshold must be a positive number, got {reject}")
    height, width = amap.shape
    scale = min(1.0, MAP_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        amap = np.asarray(cv2.resize(amap, size, interpolation=cv2.INTER_AREA), dtype=np.float32)
    relative = np.maximum(np.nan_to_num(amap / reject, nan=0.0, posinf=1e9), 0.0)
    levels = np.clip(np.round(np.log2(1.0 + relative) * MAP_UNIT), 0, 65535).astype(np.uint16)
    ok, data = cv2.imencode(".png", levels, PNG_PARAMS)
    if not ok:
        raise ValueError("OpenCV cannot encode the anomaly map as PNG")
    return data.tobytes()


def decode_map(data: bytes) -> np.ndarray:
    """Inverse of :func:`encode_map`: ``(h, w)`` float32, 1.0 = at the reject threshold.

    Raises:
        ValueError: the bytes are not a 16-bit single-channel PNG.
    """
    levels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if levels is None or levels.ndim != 2 or levels.dtype != np.uint16:
        raise ValueError("not a kept anomaly map (16-bit single-channel PNG)")
    return np.exp2(levels.astype(np.float32) / MAP_UNIT) - 1.0


def read_map(image_path: str | os.PathLike[str]) -> np.ndarray | None:
    """The kept map of a stored image, or None when none was kept (or it cannot be read)."""
    path = map_path(image_path)
    try:
        return decode_map(path.read_bytes())
    except (OSError, ValueError):
        return None


def write_map(image_path: str | os.PathLike[str], anomaly_map: np.ndarray, reject: float) -> Path:
    """Keep the anomaly map of a stored image (see :func:`map_path`), complete or not at all.

    Raises:
        OSError: the map cannot be written.
        ValueError: see :func:`encode_map`.
    """
    data = encode_map(anomaly_map, reject)
    target = map_path(image_path)
    target.parent.mkdir(exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-", suffix=".png")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temp, target)
    finally:
        Path(temp).unlink(missing_ok=True)
    return target
