"""``open_source(uri)``: one string names any image source.

=====================================================  ============================================
URI                                                    source
=====================================================  ============================================
``/data/parts`` or ``folder:///data/parts``            every image of a folder, sorted (batch)
``watch:///data/incoming?settle=0.2&timeout=10``        new files of a folder as they land
``video:///data/run.mp4?every=5``                      frames of a video file
``rtsp://user:pw@10.0.0.5/stream``                     RTSP stream (reconnects when it drops)
``usb://0?fps=30``                                     USB camera 0 (reconnects when it drops)
``gige://<device-id>?frame_rate=10``                   GigE Vision camera through Aravis
``sim:///data/metal?rate=20&defect_ratio=0.1&count=1000&seed=0``  line simulator
=====================================================  ============================================

Options go in the query string (an RTSP URL keeps its own query: give flawscope's options as
keyword arguments instead). Keyword arguments override the query.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from flawscope.acquire.base import Source
from flawscope.errors import InputError

EXPECTED = "expected a folder path, watch://, video://, rtsp://, usb://, gige://, or sim://"


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a yes/no value")


def _optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none", "0") else int(text)


_STREAM: dict[str, tuple[str, Callable[[str], Any]]] = {
    "fps": ("fps", float),
    "every": ("every", int),
    "count": ("count", int),
    "backoff": ("backoff_s", float),
    "max_backoff": ("max_backoff_s", float),
    "retries": ("max_retries", int),
    "prefix": ("prefix", str),
}
#: Query options of each scheme: query name -> (keyword argument, converter).
OPTIONS: dict[str, dict[str, tuple[str, Callable[[str], Any]]]] = {
    "folder": {"recursive": ("recursive", _bool)},
    "watch": {
        "settle": ("settle_s", float),
        "poll": ("poll_s", float),
        "timeout": ("timeout_s", float),
        "existing": ("existing", _bool),
        "idle": ("idle_s", float),
        "count": ("count", int),
    },
    "video": {k: v for k, v in _STREAM.items() if k in ("every", "count", "prefix")},
    "usb": _STREAM,
    "rtsp": {},
    "gige": {
        "count": ("count", int),
        "frame_rate": ("frame_rate", float),
        "exposure_us": ("exposure_us", float),
        "pixel_format": ("pixel_format", str),
        "timeout": ("timeout_s", float),
        "buffers": ("n_buffers", int),
        "backoff": ("backoff_s", float),
        "max_backoff": ("max_backoff_s", float),
        "retries": ("max_retries", int),
    },
    "sim": {
        "rate": ("rate", float),
        "defect_ratio": ("defect_ratio", float),
        "count": ("count", _optional_int),
        "seed": ("seed", int),
        "start": ("start", int),
        "prefix": ("prefix", str),
        "cache": ("cache", int),
    },
}


def _options(uri: str, scheme: str, query: str) -> dict[str, Any]:
    known = OPTIONS[scheme]
    found: dict[str, Any] = {}
    for name, text in parse_qsl(query, keep_blank_values=True):
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise InputError(uri, f"unknown option {name!r} for {scheme}:// (known options: {listed})")
        keyword, convert = known[name]
        try:
            found[keyword] = convert(text)
        except ValueError:
            kind = convert.__name__.strip("_")
            raise InputError(uri, f"option {name}={text!r} is not a valid {kind}") from None
    return found


def _path(netloc: str, path: str) -> str:
    # folder:///abs/path has an empty netloc; folder://relative/path puts "relative" there.
    return unquote(netloc + path)


def open_source(uri: str | os.PathLike[str], **options: Any) -> Source:
    """Open an image source from its URI (see the module docstring for the forms).

    Args:
        uri: the source URI, or a plain folder path.
        **options: keyword arguments of the source class; they override the URI's query options.

    Returns:
        The source, not yet started (iterate it to get frames; close it when done).

    Raises:
        InputError: for an unknown scheme, an unknown or invalid option, or a source that cannot be
            opened (missing folder or file, Aravis not installed...).
    """
    text = os.fspath(uri)
    if "://" not in text:
        from flawscope.acquire.folder import FolderSource

        return FolderSource(text, **options)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in OPTIONS and scheme not in ("rtsps",):
        raise InputError(text, f"unknown source {parts.scheme + '://'!r}; {EXPECTED}")
    if scheme in ("rtsp", "rtsps"):
        from flawscope.acquire.video import VideoSource

        return VideoSource(text, uri=text, live=True, **options)
    found = {**_options(text, scheme, parts.query), **options}
    location = _path(parts.netloc, parts.path)
    if scheme == "folder":
        from flawscope.acquire.folder import FolderSource

        return FolderSource(location, uri=text, **found)
    if scheme == "watch":
        from flawscope.acquire.watch import WatchSource

        return WatchSource(location, uri=text, **found)
    if scheme == "video":
        from flawscope.acquire.video import VideoSource

        return VideoSource(location, uri=text, live=False, **found)
    if scheme == "usb":
        from flawscope.acquire.video import VideoSource

        try:
            index = int(parts.netloc or "0")
        except ValueError:
            raise InputError(text, f"usb:// needs a camera index (usb://0), got {parts.netloc!r}") from None
        return VideoSource(index, uri=text, live=True, **found)
    if scheme == "gige":
        from flawscope.acquire.gige import GigESource

        return GigESource(unquote(parts.netloc) or None, uri=text, **found)
    from flawscope.acquire.simulator import SimSource

    return SimSource(location, uri=text, **found)
