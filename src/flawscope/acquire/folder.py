"""A folder of images inspected as a batch, in sorted order (subfolders included by default)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Generator
from pathlib import Path
from typing import Any

from flawscope.acquire.base import Source, frame_from_file, part_id_for
from flawscope.acquire.registry import Option, SourceTarget, parse_bool, register_source
from flawscope.data.imageio import IMAGE_SUFFIXES, is_image_file
from flawscope.errors import InputError
from flawscope.types import Frame

logger = logging.getLogger(__name__)


def list_image_files(root: Path, recursive: bool = False) -> list[Path]:
    """Image files of a folder in sorted path order (hidden files and folders left out).

    Args:
        root: the folder.
        recursive: also list the images of its subfolders, at any depth.

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

    Subfolders are searched too by default (a dataset's ``test/`` folder holds one folder per
    kind of part), and a part id then includes its subfolder (``crack/003``). A file that cannot
    be read gives an error frame (``image=None``), never a gap.

    Args:
        path: the folder.
        recursive: also take images from subfolders, at any depth (``folder://DIR?recursive=0``
            for the folder's own images only).
        uri: URI to report in frames (default ``folder://<absolute path>``).

    Raises:
        InputError: when the folder does not exist, is a file or holds no image (a run that
            would inspect nothing is refused, saying where images were looked for).
    """

    def __init__(self, path: str | os.PathLike[str], *, recursive: bool = True, uri: str | None = None):
        self.root = Path(path).expanduser().absolute()
        super().__init__(uri or f"folder://{self.root.as_posix()}")
        self.recursive = recursive
        # Listed now so that a missing or empty folder is reported when the source is opened.
        self.paths = list_image_files(self.root, recursive)
        if not self.paths:
            raise InputError(self.root, self._nothing_found())
        self.part_ids = unique_part_ids(self.paths, self.root)

    def _nothing_found(self) -> str:
        suffixes = ", ".join(IMAGE_SUFFIXES)
        if self.recursive:
            return f"no images found, subfolders included (expected files ending in {suffixes})"
        below = list_image_files(self.root, recursive=True)
        if below:
            return (
                f"no images directly in this folder, but {len(below)} in its subfolders: "
                f"use folder://{self.root.as_posix()}?recursive=1 to inspect them"
            )
        return f"no images found (expected files ending in {suffixes})"

    def __len__(self) -> int:
        return len(self.paths)

    def _frames(self) -> Generator[Frame, None, None]:
        for index, (path, part_id) in enumerate(zip(self.paths, self.part_ids, strict=True)):
            if self.stopping:
                return
            yield frame_from_file(path, part_id, self.uri, {"index": str(index)})


@register_source(
    "folder",
    path=True,
    options={"recursive": Option("recursive", parse_bool)},
    example="folder:///data/parts?recursive=0 (or a plain path)",
    summary="every image of a folder and its subfolders, sorted (batch)",
)
def open_folder(target: SourceTarget, **options: Any) -> FolderSource:
    """Open ``folder:///path`` or a plain folder path."""
    uri = target.uri if "://" in target.uri else None
    return FolderSource(target.location, uri=uri, **options)
