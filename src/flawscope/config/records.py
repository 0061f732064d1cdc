"""The station configuration's records: what a read ``station.toml`` becomes (frozen dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from flawscope.errors import InputError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration file.

    Attributes:
        where: the key, dotted (``sink.mes.url``, ``camera[0].source``).
        message: what is wrong.
        line: 1-based line of the file (None when the key is missing or the file unreadable).
    """

    where: str
    message: str
    line: int | None = None

    def render(self, path: Path | str) -> str:
        """``station.toml:12: sink.mes.url: must be text, got 3``."""
        place = f"{path}:{self.line}" if self.line else f"{path}"
        return f"{place}: {self.where}: {self.message}" if self.where else f"{place}: {self.message}"


class ConfigError(InputError):
    """A configuration file with problems; ``problems`` lists all of them."""

    def __init__(self, path: Path | str, problems: list[Problem]) -> None:
        self.path = Path(path)
        self.problems = tuple(problems)
        lines = "\n  ".join(p.render(path) for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(path, f"{len(problems)} {noun}:\n  {lines}")


# --------------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class StationSection:
    """``[station]``: who the station is and where its records go.

    Attributes:
        name: the station's name (ISA-95 work cell); records carry ``<name>/<camera>``.
        enterprise: ISA-95 enterprise (MQTT topics).
        site: ISA-95 site.
        area: ISA-95 area (optional; not in the default topic).
        line: ISA-95 production line.
        audit: SQLAlchemy URL of the audit store; a relative SQLite path is relative to the file.
        audit_synchronous: SQLite ``FULL`` (fsync every commit) or ``NORMAL``.
        store_images: keep every part's image under this folder (none when absent).
        status_file: where a running station writes its live status (default ``<name>.status.json``
            beside the configuration); ``flawscope station status`` reads it.
        status_interval_s: seconds between status updates.
    """

    name: str
    enterprise: str = "enterprise"
    site: str = "site"
    area: str = ""
    line: str = "line"
    audit: str = "sqlite:///flawscope-audit.db"
    audit_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    store_images: Path | None = None
    status_file: Path | None = None
    status_interval_s: float = field(default=1.0, metadata={"min": 0.05})


@dataclass(frozen=True)
class CameraConfig:
    """``[[camera]]``: one camera, its deployed bundle and how parts reach it.

    Attributes:
        name: camera name, unique in the station.
        source: source URI (``sim://``, ``gige://``, a folder...; see ``flawscope inspect``).
        bundle: deployed bundle folder (from ``flawscope export``).
        threshold_version: pin these thresholds (default: the bundle's latest).
        int8: use the INT8 graph.
        batch_size: most parts inspected together.
        queue_size: parts waiting before backpressure applies.
        backpressure: ``block`` the source, or ``drop`` (recorded ``not_inspected``).
        trigger: ``free`` (take frames as the source gives them) or ``plc`` (take one frame per PLC
            trigger, from the OPC UA sink's StartSingleJob or Trigger tag).
        threads: ONNX Runtime intra-op threads (default: all cores).
        trusted_keys: the station's trust store for bundle signatures (a public key file or a
            folder of ``*.pub``); default: this machine's keys and those trusted with
            ``flawscope keys trust``.
        allow_unsigned: load a bundle without a trusted signature (development only; every
            record says so).
    """

    name: str
    source: str
    bundle: Path
    threshold_version: int | None = field(default=None, metadata={"min": 1})
    int8: bool = False
    batch_size: int = field(default=8, metadata={"min": 1})
    queue_size: int = field(default=64, metadata={"min": 1})
    backpressure: Literal["block", "drop"] = "block"
    trigger: Literal["free", "plc"] = "free"
    threads: int | None = field(default=None, metadata={"min": 1})
    trusted_keys: Path | None = None
    allow_unsigned: bool = False


@dataclass(frozen=True)
class DeliveryConfig:
    """``[delivery]`` (and ``[sink.NAME.delivery]``): how a sink works through its backlog.

    Attributes:
        retry_initial_s: first wait after a failed delivery; doubles (with full jitter) each time.
        retry_max_s: longest wait between attempts.
        give_up_after_s: a record still refused after this long goes to the dead letters (0: never;
            records then wait in the log until the peer takes them).
        max_batch: most records handed to the sink at once.
        cursor_interval_s: the durable cursor is written at most this often (a crash re-delivers
            what was delivered since, with the same ids).
        poll_s: how often the log is read for records other processes committed.
    """

    retry_initial_s: float = field(default=0.5, metadata={"min": 0.001})
    retry_max_s: float = field(default=30.0, metadata={"min": 0.001})
    give_up_after_s: float = field(default=0.0, metadata={"min": 0.0})
    max_batch: int = field(default=100, metadata={"min": 1})
    cursor_interval_s: float = field(default=0.25, metadata={"min": 0.0})
    poll_s: float = field(default=0.5, metadata={"min": 0.01})

    def validate(self) -> list[Problem]:
        """Cross-field checks."""
        if self.retry_initial_s > self.retry_max_s:
            return [Problem("retry_initial_s", f"must be <= retry_max_s ({self.retry_max_s})")]
        return []


@dataclass(frozen=True)
class SinkConfig:
    """``[sink.NAME]``: one delivery target.

    Attributes:
        name: the table's name; the sink's cursor and dead letters are kept under it.
        type: a registered sink type.
        cameras: deliver only the records of these cameras (default: all).
        enabled: a disabled sink is configured but not started.
        delivery: retry and cursor settings.
        options: the sink type's own options (its registered dataclass).
    """

    name: str
    type: str
    cameras: tuple[str, ...]
    enabled: bool
    delivery: DeliveryConfig
    options: Any


@dataclass(frozen=True)
class StationConfig:
    """A whole ``station.toml``.

    Attributes:
        path: the file read.
        station: ``[station]``.
        cameras: ``[[camera]]`` tables, in order.
        delivery: ``[delivery]`` defaults.
        sinks: ``[sink.NAME]`` tables, in file order.
        web: ``[web]``, the web app's settings (:class:`flawscope.web.config.WebConfig`, its audit
            store, image store and status file those of the station), or None without the table.
    """

    path: Path
    station: StationSection
    cameras: tuple[CameraConfig, ...]
    delivery: DeliveryConfig
    sinks: tuple[SinkConfig, ...]
    web: Any = None

    def camera(self, name: str) -> CameraConfig:
        """The camera called ``name``.

        Raises:
            InputError: no such camera.
        """
        for camera in self.cameras:
            if camera.name == name:
                return camera
        raise InputError(
            self.path, f"no camera {name!r} (cameras: {', '.join(c.name for c in self.cameras)})"
        )

    def sink(self, name: str) -> SinkConfig:
        """The sink called ``name``.

        Raises:
            InputError: no such sink.
        """
        for sink in self.sinks:
            if sink.name == name:
                return sink
        known = ", ".join(s.name for s in self.sinks) or "none"
        raise InputError(self.path, f"no sink {name!r} in this station (sinks: {known})")

    def record_station(self, camera: str) -> str:
        """The ``station`` field of the records of one camera: ``<station>/<camera>``."""
        return f"{self.station.name}/{camera}"

    @property
    def status_path(self) -> Path:
        """Where the running station writes its live status."""
        return self.station.status_file or self.path.parent / f"{self.station.name}.status.json"
