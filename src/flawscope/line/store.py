"""Image storage of the line: every inspected part's image, under ``<root>/<UTC date>/<part id>.<ext>``.

When the frame came from a file (folder, watched folder, simulator) that file is copied byte for
byte, keeping its format; otherwise the pixels are written as PNG. A stored image is never
overwritten: a second image of the same part on the same day gets ``-1``, ``-2``... appended. Each
file is written under a temporary name and linked into place, so a crash never leaves a partial
image under a part's name.
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
