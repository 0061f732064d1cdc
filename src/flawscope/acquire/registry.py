"""The source registry: URI schemes mapped to the modules that open them (a dict and a decorator).

A protocol is one module: it defines its :class:`~flawscope.acquire.base.Source` subclass and
registers an opener for its scheme(s) with the query options it takes::

    @register_source("linescan", options={"lines": Option("lines", int)}, example="linescan://cam0?lines=512")
    def _open(target: SourceTarget, **options: Any) -> Source:
        return LineScanSource(target.location, uri=target.uri, **options)

and ``flawscope/acquire/__init__.py`` imports it. The lifecycle every source follows: the opener
*opens* it (checking what it can up front), iterating it *delivers* frames, :meth:`Source.close`
stops it from any thread and :meth:`Source.health` says how it is doing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flawscope.acquire.base import Source


def parse_bool(text: str) -> bool:
    """A yes/no query value (``1/0``, ``true/false``, ``yes/no``, ``on/off``).

    Raises:
        ValueError: for anything else.
    """
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a yes/no value")


parse_bool.__name__ = "yes/no value"


def parse_optional_int(text: str) -> int | None:
    """A whole number where ``""``, ``none`` and ``0`` mean "no limit"."""
    return None if text.strip().lower() in ("", "none", "0") else int(text)


parse_optional_int.__name__ = "whole number"


@dataclass(frozen=True)
class Option:
    """One query option of a scheme.

    Attributes:
        keyword: the keyword argument of the opener it becomes.
        convert: text to value; raises ``ValueError`` for a bad value.
    """

    keyword: str
    convert: Callable[[str], Any] = str

    @property
    def kind(self) -> str:
        """What the value must be, for error messages."""
        name = getattr(self.convert, "__name__", "value")
        return {"int": "whole number", "float": "number", "str": "text"}.get(name, name)


@dataclass(frozen=True)
class SourceTarget:
    """What an opener gets: the URI and what it names.

    Attributes:
        uri: the URI as given.
        scheme: lower-case scheme (``"folder"`` for a plain path).
        location: ``netloc + path``, unquoted (a folder or file path, a device id...).
        netloc: the URI's network location, as given.
        query: the raw query string (for schemes that keep their own, like RTSP).
    """

    uri: str
    scheme: str
    location: str
    netloc: str = ""
    query: str = ""


Opener = Callable[..., Source]
F = TypeVar("F", bound=Opener)


@dataclass(frozen=True)
class SourceSpec:
    """A registered scheme.

    Attributes:
        scheme: the URI scheme.
        opener: ``opener(target, **options) -> Source``.
        options: query name -> :class:`Option`.
        example: an example URI, for help texts and error messages.
        summary: what the source is, in a few words.
        own_query: the URI's query belongs to the remote end (RTSP) and is not parsed as options.
        path: the location is a file or folder path (a relative one is resolved against the folder
            of the station.toml that names it).
    """

    scheme: str
    opener: Opener
    options: Mapping[str, Option] = field(default_factory=dict)
    example: str = ""
    summary: str = ""
    own_query: bool = False
    path: bool = False


SOURCES: dict[str, SourceSpec] = {}


def register_source(
    *schemes: str,
    options: Mapping[str, Option] | None = None,
    example: str = "",
    summary: str = "",
    own_query: bool = False,
    path: bool = False,
) -> Callable[[F], F]:
    """Decorator registering a source opener under one or more URI schemes.

    Raises:
        ValueError: when a scheme is already registered (two modules claiming one protocol).
    """

    def add(opener: F) -> F:
        for scheme in schemes:
            key = scheme.lower()
            if key in SOURCES:
                owner = SOURCES[key].opener
                raise ValueError(f"source scheme {key!r} is already registered by {owner.__module__}")
            SOURCES[key] = SourceSpec(key, opener, dict(options or {}), example, summary, own_query, path)
        return opener

    return add


def registered_sources() -> dict[str, SourceSpec]:
    """Every registered scheme (importing the built-in source modules first)."""
    import flawscope.acquire  # noqa: F401  (registers the built-in sources)

    return dict(SOURCES)
