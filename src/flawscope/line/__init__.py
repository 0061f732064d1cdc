"""flawscope.line: the streaming inspection loop of a station.

:func:`run_line` takes parts from a source, inspects them in batches, commits every result to the
audit log (and stores the image), and only then publishes it.
"""

from flawscope.line.errors import LineStopped
from flawscope.line.loop import run_line
from flawscope.line.records import DROPPED_REASON, InspectorLike, Publisher
from flawscope.line.settings import BACKPRESSURE, LineSettings, check_line_settings
from flawscope.line.stats import STAGES, LineStats, LineSummary, StageLatency
from flawscope.line.store import ImageStore

__all__ = [
    "BACKPRESSURE",
    "DROPPED_REASON",
    "STAGES",
    "ImageStore",
    "InspectorLike",
    "LineSettings",
    "LineStats",
    "LineStopped",
    "LineSummary",
    "Publisher",
    "StageLatency",
    "check_line_settings",
    "run_line",
]
