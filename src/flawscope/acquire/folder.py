"""A folder of images inspected as a batch, in sorted order."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

from flawscope.acquire.base import Source, frame_from_file, part_id_for
from flawscope.acquire.registry import Option, SourceTarget, parse_bool, register_source
from flawscope.data.imageio import is_image_file
from flawscope.errors import InputError
from flawscope.types import Frame

logger = logging.getLogger(__name__)


def list_image_files(root: Path, recursive: bool = False) -> list[Path]:
    """Image files of a folder in sorted path order (hidden files and folders left out).

    Raises:
        InputError: when ``root`` is missing or not a folder.
    """
    if not root.exists():
        raise InputError(root, "folder does not exist")
    if not root.is_dir():
        raise InputError(root, "is a file; expected a folder of images")
    found: list[Path] = []
    others = 0
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if recursive else []
        for name in names:
            if name.startswith("."):
                continue
            if is_image_file(name):
                found.append(Path(folder) / name)
            else:
                others += 1
    if others:
        logger.info("%s: %d files without an image suffix are not parts and were left out", root, others)
    return sorted(found)


def unique_part_ids(paths: list[Path], root: Path) -> list[str]:
    """Part ids (path under ``root`` without suffix); files that share a stem keep their suffix."""
    ids = [part_id_for(p, root) for p in paths]
    counts = Counter(ids)
    pairs = zip(ids, paths, strict=True)
    return [part if counts[part] == 1 else p.relative_to(root).as_posix() for part, p in pairs]


class FolderSource(Source):
    """Every image file of a folder, once, in sorted order; then the iteration ends.

    A file that cannot be read gives an error frame (``image=None``), never a gap.

    Args:
        path: the folder.
        recursive: also take images from subfolders (part ids then include the subfolder).
        uri: URI to report in frames (default ``folder://<absolute path>``).

    Raises:
        InputError: when the folder does not exist or is a file.
    """

    def __init__(self, path: str | os.PathLike[str], *, recursive: bool = False, uri: str | None = None):
        self.root = Path(path).expanduser().absolute()
        super().__init__(uri or f"folder://{self.root.as_posix()}")
        self.recursive = recursive
        # Listed now so that a missing folder is reported when the source is opened.
        self.paths = list_image_files(self.root, recursive)
        self.part_ids = unique_part_ids(self.paths, self.root)

    def __len__(self) -> int:
        return len(self.paths)

    def _frames(self) -> Generator[Frame, None, None]:
        for index, (path, part_id) in enumerate(zip(self.paths, self.part_ids, strict=True)):
            if self.stopping:
                return
            yield frame_from_file(path, part_id, self.uri, {"index": str(index)})


@register_source(
    "folder",
    options={"recursive": Option("recursive", parse_bool)},
    example="folder:///data/parts (or a plain path)",
    summary="every image of a folder, sorted (batch)",
)
def open_folder(target: SourceTarget, **options: Any) -> FolderSource:
    """Open ``folder:///path`` or a plain folder path."""
    uri = target.uri if "://" in target.uri else None
    return FolderSource(target.location, uri=uri, **options)
