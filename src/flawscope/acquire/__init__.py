"""flawscope.acquire: image sources, each an iterator of :class:`~flawscope.types.Frame`.

Open one from a URI with :func:`open_source` (folder path, ``watch://``, ``video://``, ``rtsp://``,
``usb://``, ``gige://``, ``sim://``, or the line-scan webs ``websim://``, ``webstrip://``,
``gigeline://``, ``webvideo://``). A part whose image cannot be read is a frame with
``image=None`` and ``error`` set, never a gap. Each source module registers its URI scheme in the
source registry (:mod:`flawscope.acquire.registry`); importing this package registers them all.
"""

from flawscope.acquire.base import Source, SourceHealth, frame_from_file
from flawscope.acquire.folder import FolderSource
from flawscope.acquire.gige import GigESource
from flawscope.acquire.gigeline import GigELineSource
from flawscope.acquire.registry import SOURCES, Option, SourceSpec, SourceTarget, register_source
from flawscope.acquire.rows import RowSource, WebGeometry
from flawscope.acquire.simulator import SimSource
from flawscope.acquire.uri import open_source, parse_source_uri
from flawscope.acquire.video import VideoSource
from flawscope.acquire.watch import WatchSource
from flawscope.acquire.websim import WebSimSource
from flawscope.acquire.webstrip import WebStripSource
from flawscope.acquire.webvideo import WebVideoSource

__all__ = [
    "SOURCES",
    "FolderSource",
    "GigELineSource",
    "GigESource",
    "Option",
    "RowSource",
    "SimSource",
    "Source",
    "SourceHealth",
    "SourceSpec",
    "SourceTarget",
    "VideoSource",
    "WatchSource",
    "WebGeometry",
    "WebSimSource",
    "WebStripSource",
    "WebVideoSource",
    "frame_from_file",
    "open_source",
    "parse_source_uri",
    "register_source",
]
