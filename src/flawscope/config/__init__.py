"""The station configuration: the only package that reads TOML.

A ``station.toml`` becomes a :class:`StationConfig`, a tree of frozen dataclasses. Reading it checks
everything that can be checked without touching the network or the disk beyond the file itself, and
reports **every** problem at once, each with the line it is on (unknown keys, wrong types, missing
keys, values out of range, a sink type nobody registered)::

    [station]                 # name, ISA-95 place, audit store
    [[camera]]                # one table per camera: source URI, deployed bundle, thresholds
    [delivery]                # retry/cursor defaults of every sink
    [sink.NAME]               # one table per sink; type = a registered sink ("mqtt", "webhook"...)
    [sink.NAME.delivery]      # this sink's own retry settings
    [web]                     # optional: the operators' web app, started beside the line

A sink type's options are the fields of the dataclass its module registered (see
:mod:`flawscope.integrate.registry`), so a new protocol brings its own options without touching
this package. Relative paths are relative to the folder of the TOML file.
"""

from flawscope.config.load import load_config
from flawscope.config.reader import key_lines
from flawscope.config.records import (
    CameraConfig,
    ConfigError,
    DeliveryConfig,
    Problem,
    SinkConfig,
    StationConfig,
    StationSection,
)

__all__ = [
    "CameraConfig",
    "ConfigError",
    "DeliveryConfig",
    "Problem",
    "SinkConfig",
    "StationConfig",
    "StationSection",
    "key_lines",
    "load_config",
]
