"""``open_source(uri)``: one string names any registered image source.

=====================================================  ============================================
URI                                                    source
=====================================================  ============================================
``/data/parts`` or ``folder:///data/parts?recursive=0``  every image of a folder and its subfolders
                                                       (``recursive=0``: the folder's own), sorted
``watch:///data/incoming?settle=0.2&timeout=10``        new files of a folder as they land
``video:///data/run.mp4?every=5``                      frames of a video file
``rtsp://user:pw@10.0.0.5/stream``                     RTSP stream (reconnects when it drops)
``usb://0?fps=30``                                     USB camera 0 (reconnects when it drops)
``gige://<device-id>?frame_rate=10``                   GigE Vision camera through Aravis
``sim:///data/metal?rate=20&defect_ratio=0.1&count=1000&seed=0``  line simulator (``&drift=dim:0.15:2000``)
=====================================================  ============================================

The schemes come from the source registry (:mod:`flawscope.acquire.registry`): each source module
registers its own scheme and query options. Options go in the query string (an RTSP URL keeps its
own query: give flawscope's options as keyword arguments instead). Keyword arguments override the
query.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from flawscope.acquire.base import Source
from flawscope.acquire.registry import Option, SourceTarget, registered_sources
from flawscope.errors import InputError


def expected_schemes() -> str:
    """The accepted forms, for error messages ("a folder path, watch://, ...")."""
    schemes = [f"{s}://" for s in registered_sources() if s != "folder"]
    return "expected a folder path, " + ", ".join(schemes)


def _options(uri: str, scheme: str, known: Mapping[str, Option], query: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, text in parse_qsl(query, keep_blank_values=True):
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise InputError(uri, f"unknown option {name!r} for {scheme}:// (known options: {listed})")
        option = known[name]
        try:
            found[option.keyword] = option.convert(text)
        except ValueError:
            raise InputError(uri, f"option {name}={text!r} is not a valid {option.kind}") from None
    return found


def parse_source_uri(uri: str | os.PathLike[str]) -> tuple[SourceTarget, dict[str, Any]]:
    """Split a source URI into its target and its converted query options, without opening it.

    Raises:
        InputError: for an unknown scheme or an unknown or invalid option.
    """
    text = os.fspath(uri)
    sources = registered_sources()
    if "://" not in text:
        return SourceTarget(text, "folder", text), {}
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    spec = sources.get(scheme)
    if spec is None:
        raise InputError(text, f"unknown source {parts.scheme + '://'!r}; {expected_schemes()}")
    # folder:///abs/path has an empty netloc; folder://relative/path puts "relative" there.
    target = SourceTarget(text, scheme, unquote(parts.netloc + parts.path), parts.netloc, parts.query)
    found = {} if spec.own_query else _options(text, scheme, spec.options, parts.query)
    return target, found


def resolve_source(uri: str, base: Path) -> str:
    """A source URI whose relative file or folder path is made absolute against ``base``.

    A plain relative path, and the location of a path scheme (``sim://data``, ``watch://in``...),
    are resolved; other URIs (cameras, streams) are returned as they are.
    """
    if "://" not in uri:
        return os.path.normpath((base / Path(uri).expanduser()).absolute()) if uri else uri
    parts = urlsplit(uri)
    spec = registered_sources().get(parts.scheme.lower())
    location = unquote(parts.netloc + parts.path)
    if spec is None or not spec.path or not location or Path(location).expanduser().is_absolute():
        return uri
    absolute = Path(os.path.normpath((base / Path(location).expanduser()).absolute())).as_posix()
    return f"{parts.scheme}://{absolute}" + (f"?{parts.query}" if parts.query else "")


def open_source(uri: str | os.PathLike[str], **options: Any) -> Source:
    """Open an image source from its URI (see the module docstring for the forms).

    Args:
        uri: the source URI, or a plain folder path.
        **options: keyword arguments of the source's opener; they override the URI's query options.

    Returns:
        The source, not yet started (iterate it to get frames; close it when done).

    Raises:
        InputError: for an unknown scheme, an unknown or invalid option, or a source that cannot be
            opened (missing folder or file, Aravis not installed...).
    """
    target, found = parse_source_uri(uri)
    spec = registered_sources()[target.scheme]
    return spec.opener(target, **{**found, **options})
