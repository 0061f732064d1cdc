"""flawscope.acquire: image sources, each an iterator of :class:`~flawscope.types.Frame`.

Open one from a URI with :func:`open_source` (folder path, ``watch://``, ``video://``, ``rtsp://``,
``usb://``, ``gige://`` or ``sim://``). A part whose image cannot be read is a frame with
``image=None`` and ``error`` set, never a gap. Each source module registers its URI scheme in the
source registry (:mod:`flawscope.acquire.registry`); importing this package registers them all.
"""

from flawscope.acquire.base import Source, SourceHealth, frame_from_file
from flawscope.acquire.folder import FolderSource
from flawscope.acquire.gige import GigESource
from flawscope.acquire.registry import SOURCES, Option, SourceSpec, SourceTarget, register_source
from flawscope.acquire.simulator import SimSource
from flawscope.acquire.uri import open_source, parse_source_uri
from flawscope.acquire.video import VideoSource
from flawscope.acquire.watch import WatchSource

__all__ = [
    "SOURCES",
    "FolderSource",
    "GigESource",
    "Option",
    "SimSource",
    "Source",
    "SourceHealth",
    "SourceSpec",
    "SourceTarget",
    "VideoSource",
    "WatchSource",
    "frame_from_file",
    "open_source",
    "parse_source_uri",
    "register_source",
]
