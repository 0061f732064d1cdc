"""flawscope.acquire: image sources, each an iterator of :class:`~flawscope.types.Frame`.

Open one from a URI with :func:`open_source` (folder path, ``watch://``, ``video://``, ``rtsp://``,
``usb://``, ``gige://`` or ``sim://``). A part whose image cannot be read is a frame with
``image=None`` and ``error`` set, never a gap.
"""

from flawscope.acquire.base import Source, frame_from_file
from flawscope.acquire.folder import FolderSource
from flawscope.acquire.gige import GigESource
from flawscope.acquire.simulator import SimSource
from flawscope.acquire.uri import open_source
from flawscope.acquire.video import VideoSource
from flawscope.acquire.watch import WatchSource

__all__ = [
    "FolderSource",
    "GigESource",
    "SimSource",
    "Source",
    "VideoSource",
    "WatchSource",
    "frame_from_file",
    "open_source",
]
