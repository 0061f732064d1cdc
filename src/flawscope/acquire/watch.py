"""A watched folder: each image file is a part, inspected once it has completely landed.

Cameras and PLC gateways usually drop image files into a folder. A file is taken only when it is
complete: its size and modification time have not changed for ``settle_s`` and it decodes. A
writer that writes to a hidden or non-image name (``.part.png``, ``part.png.tmp``) and renames it
into place is picked up right after the rename. A file that stays unreadable (corrupt, or a writer
that died half-way) is not dropped: after ``timeout_s`` without change it becomes an error frame,
so the part is recorded as not inspected properly and rejected.

Polling (not inotify) is used on purpose: it works the same on local disks and network shares.
A file rewritten in place after it was taken is a new acquisition of the same part id.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flawscope.acquire.base import Source
from flawscope.acquire.registry import Option, SourceTarget, parse_bool, register_source
from flawscope.data.imageio import is_image_file, read_image
from flawscope.errors import FlawscopeError, InputError
from flawscope.types import Frame

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    """A file seen but not yet taken (mutable bookkeeping, private to the watcher)."""

    size: int
    mtime_ns: int
    changed_at: float
    next_try: float = 0.0
    problem: str = ""


class WatchSource(Source):
    """New image files of a folder, as they land, until closed (or idle / a count is reached).

    Args:
        path: the watched folder (must exist).
        settle_s: a file must keep its size and mtime this long before it is read.
        poll_s: how often the folder is listed.
        timeout_s: a file still unreadable this long after its last change becomes an error frame.
        existing: also take the files already in the folder when watching starts.
        idle_s: end the iteration after this long without a new file (None: never).
        count: end the iteration after this many parts (None: never).
        uri: URI to report in frames (default ``watch://<absolute path>``).

    Raises:
        InputError: when the folder does not exist or is a file, or a setting is out of range.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        settle_s: float = 0.2,
        poll_s: float = 0.05,
        timeout_s: float = 10.0,
        existing: bool = True,
        idle_s: float | None = None,
        count: int | None = None,
        uri: str | None = None,
    ) -> None:
        self.root = Path(path).expanduser().absolute()
        super().__init__(uri or f"watch://{self.root.as_posix()}")
        if not self.root.is_dir():
            raise InputError(self.root, "watched folder does not exist or is not a folder")
        for name, value in (("settle_s", settle_s), ("poll_s", poll_s), ("timeout_s", timeout_s)):
            if not value >= 0:
                raise InputError(f"{self.uri}: {name}", f"must be >= 0, got {value}")
        if timeout_s < settle_s:
            raise InputError(f"{self.uri}: timeout_s", f"{timeout_s} must be at least settle_s ({settle_s})")
        if count is not None and count < 1:
            raise InputError(f"{self.uri}: count", f"must be at least 1, got {count}")
        self.settle_s = settle_s
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.existing = existing
        self.idle_s = idle_s
        self.count = count

    def _scan(self) -> dict[str, tuple[int, int]]:
        """Visible image files of the folder: name -> (size, mtime_ns)."""
        found: dict[str, tuple[int, int]] = {}
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not is_image_file(entry.name):
                        continue
                    try:
                        if not entry.is_file():
                            continue
                        stat = entry.stat()
                    except OSError:  # removed or renamed between listing and stat
                        continue
                    found[entry.name] = (stat.st_size, stat.st_mtime_ns)
        except OSError as exc:
            # A network share that drops for a moment must not end the line; say so and retry.
            logger.warning("%s: cannot list the watched folder (%s); retrying", self.root, exc)
        return found

    def _frame(self, name: str, state: _Pending, now: float) -> Frame | None:
        """The part's frame when its file is ready or timed out; None to keep waiting."""
        path = self.root / name
        meta = {"path": str(path), "size": str(state.size)}
        try:
            image = read_image(path)
        except (FlawscopeError, OSError) as exc:
            state.problem = str(exc)
            if now - state.changed_at < self.timeout_s:
                state.next_try = now + max(self.settle_s, self.poll_s)
                return None
            logger.warning("%s: still unreadable %.1f s after its last change: %s", path, self.timeout_s, exc)
            error = f"{exc} (unreadable for {self.timeout_s:g} s after the file last changed)"
            return Frame(Path(name).stem, None, time.time(), self.uri, meta, error=error)
        return Frame(Path(name).stem, image, state.mtime_ns / 1e9, self.uri, meta)

    def _frames(self) -> Generator[Frame, None, None]:
        pending: dict[str, _Pending] = {}
        taken: dict[str, tuple[int, int]] = {}  # files already emitted, while they stay in the folder
        if not self.existing:
            taken.update(self._scan())
        emitted = 0
        last_new = time.monotonic()
        while not self.stopping:
            listing = self._scan()
            now = time.monotonic()
            for name in [n for n in taken if n not in listing]:
                del taken[name]
            for name in [n for n in pending if n not in listing]:
                logger.debug("%s vanished before it was complete", self.root / name)
                del pending[name]
            for name, (size, mtime_ns) in sorted(listing.items()):
                if taken.get(name) == (size, mtime_ns):
                    continue
                state = pending.get(name)
                if state is None or (state.size, state.mtime_ns) != (size, mtime_ns):
                    pending[name] = _Pending(size, mtime_ns, changed_at=now)
                    continue
                if now - state.changed_at < self.settle_s or now < state.next_try:
                    continue
                frame = self._frame(name, state, now)
                if frame is None:
                    continue
                del pending[name]
                taken[name] = (size, mtime_ns)
                emitted += 1
                last_new = time.monotonic()
                yield frame
                if self.stopping or (self.count is not None and emitted >= self.count):
                    return
                now = time.monotonic()
            if self.idle_s is not None and not pending and time.monotonic() - last_new >= self.idle_s:
                logger.info("%s: no new file for %.1f s; watch ends", self.root, self.idle_s)
                return
            self._wait(self.poll_s)


@register_source(
    "watch",
    path=True,
    options={
        "settle": Option("settle_s", float),
        "poll": Option("poll_s", float),
        "timeout": Option("timeout_s", float),
        "existing": Option("existing", parse_bool),
        "idle": Option("idle_s", float),
        "count": Option("count", int),
    },
    example="watch:///data/incoming?settle=0.2&timeout=10",
    summary="new files of a folder as they land",
)
def open_watch(target: SourceTarget, **options: Any) -> WatchSource:
    """Open ``watch:///path``."""
    return WatchSource(target.location, uri=target.uri, **options)
