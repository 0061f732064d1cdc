"""flawscope.station: a whole station from one ``station.toml`` (cameras, audit store, sinks).

:class:`Station` runs one inspection line per camera and one forwarder per sink in one process;
:func:`check_station` checks a configuration and the peers it names before anything runs.
"""

from flawscope.station.check import check_station
from flawscope.station.runner import Station, StationSummary, load_inspector, run_station
from flawscope.station.status import StationStatus, read_status, status_line, write_status

__all__ = [
    "Station",
    "StationStatus",
    "StationSummary",
    "check_station",
    "load_inspector",
    "read_status",
    "run_station",
    "status_line",
    "write_status",
]
