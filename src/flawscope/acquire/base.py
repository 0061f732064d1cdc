"""What every image source shares: an iterator of :class:`~flawscope.types.Frame` that can be stopped.

A source never skips a part silently: a part whose image cannot be read becomes a ``Frame`` with
``image=None`` and ``error`` set, so that the line records it (as an ``error``, a reject).

``close()`` may be called from any thread, also while another thread is iterating: it only asks the
iteration to end; the iterating generator releases its own resources (files, cameras) on the way
out, so no resource is torn down under a thread that is using it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from flawscope.data.imageio import read_image
from flawscope.errors import FlawscopeError, InputError
from flawscope.types import Frame

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceHealth:
    """How a source is doing, for status lines and ``flawscope station status``.

    Attributes:
        uri: the source's URI.
        connected: the camera/stream/folder answers (False while reconnecting or after it failed).
        missed: frames the source knows it lost.
        reconnects: reconnections so far.
        last_error: the latest problem, for a person (``""`` when none).
    """

    uri: str
    connected: bool
    missed: int = 0
    reconnects: int = 0
    last_error: str = ""


class Source:
    """Base class of the image sources: iterate to get frames, ``close()`` to stop.

    Subclasses implement :meth:`_frames`, a generator that checks :attr:`stopping` (or waits on it
    with :meth:`_wait`) and frees what it opened in a ``finally`` block.

    Attributes:
        uri: the URI the source was opened from (copied into every frame's ``source``).
        missed: frames known to be lost by the source itself (e.g. while a stream was down).
        reconnects: how many times the source had to reconnect.
        connected: False while the source is reconnecting or once it gave up.
        last_error: the latest problem the source met (``""`` when none).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.missed = 0
        self.reconnects = 0
        self.connected = True
        self.last_error = ""
        self._stop = threading.Event()
        self._iterating = False

    def _frames(self) -> Generator[Frame, None, None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        if self._iterating:
            raise RuntimeError(f"{self.uri}: a source can be iterated by one consumer at a time")
        self._iterating = True
        frames = self._frames()
        try:
            for frame in frames:
                yield frame
                if self._stop.is_set():
                    return
        finally:
            frames.close()  # runs the generator's own clean-up now, not whenever it is collected
            self._iterating = False

    @property
    def stopping(self) -> bool:
        """True once :meth:`close` was called."""
        return self._stop.is_set()

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking early on :meth:`close`; True when the source was closed."""
        return self._stop.wait(max(0.0, seconds))

    def health(self) -> SourceHealth:
        """The source's state now (thread-safe: plain attribute reads)."""
        return SourceHealth(self.uri, self.connected, self.missed, self.reconnects, self.last_error)

    def close(self) -> None:
        """Stop the source: the iteration ends after the frame in hand (thread-safe, idempotent)."""
        self._stop.set()

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def check_backoff(uri: str, backoff_s: float, max_backoff_s: float) -> None:
    """Refuse reconnection waits that make no sense, naming the source and the field.

    Raises:
        InputError: unless ``0 < backoff_s <= max_backoff_s``.
    """
    if not 0 < backoff_s <= max_backoff_s:
        raise InputError(
            f"{uri}: backoff", f"need 0 < backoff ({backoff_s}) <= max_backoff ({max_backoff_s})"
        )


def backoff_delays(backoff_s: float, max_backoff_s: float) -> Iterator[float]:
    """Waits between reconnection attempts: ``backoff_s``, doubling each time, at most ``max_backoff_s``."""
    delay = backoff_s
    while True:
        yield delay
        delay = min(delay * 2, max_backoff_s)


def frame_from_file(path: Path, part_id: str, source: str, meta: Mapping[str, str] | None = None) -> Frame:
    """Read one image file into a frame; a file that cannot be read gives an error frame, not an exception.

    Args:
        path: image file.
        part_id: the part's identifier.
        source: URI of the source.
        meta: extra metadata; ``path`` is always added.

    Returns:
        The frame, with ``image`` set, or ``image=None`` and ``error`` saying why.
    """
    info = {**(meta or {}), "path": str(path)}
    timestamp = time.time()
    try:
        image = read_image(path)
    except FlawscopeError as exc:
        logger.warning("part %s: %s", part_id, exc)
        return Frame(part_id, None, timestamp, source, info, error=str(exc))
    except OSError as exc:  # e.g. the file vanished between listing and reading
        logger.warning("part %s: %s: %s", part_id, path, exc)
        return Frame(part_id, None, timestamp, source, info, error=f"{path}: cannot read the file ({exc})")
    return Frame(part_id, image, timestamp, source, info)


def part_id_for(path: Path, root: Path) -> str:
    """A part identifier from an image file's path: its path under ``root`` without the suffix."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        relative = Path(path.name)
    return relative.with_suffix("").as_posix()
