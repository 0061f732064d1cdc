"""flawscope.monitor: is the line still the line the model was calibrated on?

Input drift (image statistics and the scores of passed parts against the calibration reference,
with EWMA charts and window tests) and outcome monitoring from operator reviews.
"""

from flawscope.monitor.drift import DriftMonitor
from flawscope.monitor.imagestats import STAT_NAMES, ImageStatistics, image_stats
from flawscope.monitor.records import DriftEvent, MonitorConfig, MonitorSummary, StatSummary
from flawscope.monitor.reference import MonitorReference, build_reference, reference_of

__all__ = [
    "STAT_NAMES",
    "DriftEvent",
    "DriftMonitor",
    "ImageStatistics",
    "MonitorConfig",
    "MonitorReference",
    "MonitorSummary",
    "StatSummary",
    "build_reference",
    "image_stats",
    "reference_of",
]
