"""The station configuration: the only module that reads TOML.

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
this module. Relative paths are relative to the folder of the TOML file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
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


# --------------------------------------------------------------------------- where keys are


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(
    r"""^\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*="""
)


def _split_key(text: str) -> list[str]:
    parts = re.findall(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""", text)
    return [p[1:-1] if p[:1] in "\"'" else p for p in parts]


def key_lines(text: str) -> dict[tuple[str | int, ...], int]:
    """The line of every table header and key of a TOML text.

    Keys of ``[[array]]`` tables get the index of their table: ``("camera", 0, "source")``. Lines
    inside multi-line strings and arrays are skipped (a best effort, good for valid files).
    """
    lines: dict[tuple[str | int, ...], int] = {}
    counts: dict[tuple[str, ...], int] = {}
    table: tuple[str | int, ...] = ()
    in_string = ""
    depth = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if in_string:
            if in_string in raw:
                in_string = ""
            continue
        if depth == 0:
            header = _HEADER.match(raw)
            if header:
                names = tuple(_split_key(header.group(2)))
                if header.group(1) == "[[":
                    index = counts.get(names, 0)
                    counts[names] = index + 1
                    table = (*names, index)
                else:
                    table = _index_path(names, counts)
                lines.setdefault(table, number)
                continue
            key = _KEY.match(raw)
            if key:
                lines.setdefault((*table, *_split_key(key.group(1))), number)
        value = raw.split("=", 1)[1] if depth == 0 and "=" in raw else raw
        for quote in ('"""', "'''"):
            if value.count(quote) % 2 == 1:
                in_string = quote
        stripped = re.sub(r'"[^"]*"|\'[^\']*\'', "", value.split("#", 1)[0])
        depth = max(0, depth + stripped.count("[") - stripped.count("]"))
    return lines


def _index_path(names: tuple[str, ...], counts: dict[tuple[str, ...], int]) -> tuple[str | int, ...]:
    """``[camera.sub]`` after ``[[camera]]`` belongs to the latest camera table."""
    out: list[str | int] = []
    for i, name in enumerate(names):
        out.append(name)
        prefix = names[: i + 1]
        if prefix in counts and i < len(names) - 1:
            out.append(counts[prefix] - 1)
    return tuple(out)


# ------------------------------------------------------------------------ typed conversion


class _Reader:
    """Converts TOML tables to dataclasses, collecting problems instead of stopping at the first."""

    def __init__(self, base: Path, lines: Mapping[tuple[str | int, ...], int]) -> None:
        self.base = base
        self.lines = lines
        self.problems: list[Problem] = []

    def line(self, path: tuple[str | int, ...]) -> int | None:
        for end in range(len(path), 0, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return None

    @staticmethod
    def name(path: tuple[str | int, ...]) -> str:
        out = ""
        for part in path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def problem(self, path: tuple[str | int, ...], message: str) -> None:
        self.problems.append(Problem(self.name(path), message, self.line(path)))

    def table(self, cls: type[Any], data: Any, path: tuple[str | int, ...], **given: Any) -> Any:
        """Build dataclass ``cls`` from a TOML table (``given`` fills fields the file does not hold)."""
        if not isinstance(data, dict):
            self.problem(path, f"must be a table, got {_kind(data)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        values: dict[str, Any] = dict(given)
        bad: set[str] = set()
        for key, value in data.items():
            if key in given or key not in fields:
                known = ", ".join(k for k in fields if k not in given)
                self.problem((*path, key), f"unknown key (known keys: {known})")
                if key not in given:  # a given field keeps its given value
                    bad.add(key)
                continue
            converted = self.value(hints[key], value, (*path, key), fields[key].metadata)
            if converted is _BAD:
                bad.add(key)
            else:
                values[key] = converted
        missing = False
        for name, spec in fields.items():
            required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
            if name not in values and required:
                if name not in bad:
                    self.problem((*path, name), "is required")
                missing = True
        if missing:
            return None
        # Cross-field checks run even when some fields were bad (those keep their defaults), so
        # that every problem is reported at once; problems about the bad fields are not repeated.
        values = {k: v for k, v in values.items() if k not in bad}
        instance = cls(**values)
        validate = getattr(instance, "validate", None)
        found = [p for p in validate() if _split_key(p.where)[0] not in bad] if callable(validate) else []
        for p in found:
            self.problem((*path, *_split_key(p.where)), p.message)
        return None if bad or found or given.keys() & data.keys() else instance

    def value(self, tp: Any, value: Any, path: tuple[str | int, ...], meta: Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (types.UnionType, typing.Union):
            inner = [a for a in args if a is not type(None)]
            return self.value(inner[0], value, path, meta)
        if origin is Literal:
            if value not in args:
                choices = ", ".join(repr(a) for a in args)
                self.problem(path, f"must be one of {choices}, got {value!r}")
                return _BAD
            return value
        if origin is tuple:
            if not isinstance(value, list):
                self.problem(path, f"must be a list, got {_kind(value)}")
                return _BAD
            items = [self.value(args[0], v, path, meta) for v in value]
            return _BAD if any(i is _BAD for i in items) else tuple(items)
        if origin is dict:
            if not isinstance(value, dict):
                self.problem(path, f"must be a table, got {_kind(value)}")
                return _BAD
            out = {k: self.value(args[1], v, (*path, k), meta) for k, v in value.items()}
            return _BAD if any(v is _BAD for v in out.values()) else out
        if dataclasses.is_dataclass(tp):
            built = self.table(tp, value, path)  # type: ignore[arg-type]
            return _BAD if built is None else built
        return self.scalar(tp, value, path, meta)

    def scalar(self, tp: Any, value: Any, path: tuple[str | int, ...], meta: Mapping[str, Any]) -> Any:
        if tp is bool:
            if not isinstance(value, bool):
                self.problem(path, f"must be true or false, got {_kind(value)} {value!r}")
                return _BAD
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.problem(path, f"must be a whole number, got {_kind(value)} {value!r}")
                return _BAD
        elif tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                self.problem(path, f"must be a number, got {_kind(value)} {value!r}")
                return _BAD
            value = float(value)
        elif tp is str or tp is Path:
            if not isinstance(value, str):
                self.problem(path, f"must be text, got {_kind(value)} {value!r}")
                return _BAD
            if tp is Path:
                if not value.strip():
                    self.problem(path, "must be a path, got an empty string")
                    return _BAD
                return Path(os.path.normpath((self.base / Path(value).expanduser()).absolute()))
            return value
        else:  # pragma: no cover - a field type this reader does not know is a programming error
            raise TypeError(f"config field type {tp!r} is not supported")
        if "min" in meta and value < meta["min"]:
            self.problem(path, f"must be >= {meta['min']}, got {value}")
            return _BAD
        if "max" in meta and value > meta["max"]:
            self.problem(path, f"must be <= {meta['max']}, got {value}")
            return _BAD
        return value


_BAD = object()


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "a whole number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# ------------------------------------------------------------------------------ reading


def _audit_url(url: str, base: Path) -> str:
    """A relative SQLite path is relative to the configuration file, not to the working directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and "?" not in url:
        relative = url[len(prefix) :]
        if relative and not relative.startswith(":"):
            return prefix + str((base / relative).absolute())
    return url


def load_config(path: str | Path) -> StationConfig:
    """Read and check a ``station.toml``.

    Raises:
        ConfigError: listing every problem found, each with its line.
    """
    from flawscope.integrate.registry import registered_sinks

    file = Path(path).expanduser().absolute()
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, [Problem("", f"cannot read the file ({exc.strerror or exc})")]) from None
    except UnicodeDecodeError:
        raise ConfigError(file, [Problem("", "is not UTF-8 text")]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"at line (\d+)", str(exc))
        line = int(found.group(1)) if found else None
        raise ConfigError(file, [Problem("", f"not valid TOML: {exc}", line)]) from None
    reader = _Reader(file.parent, key_lines(text))
    known = {"station", "camera", "delivery", "sink", "web"}
    for key in data:
        if key not in known:
            reader.problem((key,), f"unknown table (known: {', '.join(sorted(known))})")

    station = reader.table(StationSection, data.get("station"), ("station",))
    if "station" not in data:
        reader.problems.append(Problem("station", "the [station] table is required"))
    cameras_data = data.get("camera", [])
    cameras: list[CameraConfig] = []
    if not isinstance(cameras_data, list) or not cameras_data:
        reader.problem(("camera",), "at least one [[camera]] table is required")
        cameras_data = []
    for index, item in enumerate(cameras_data):
        camera = reader.table(CameraConfig, item, ("camera", index))
        if camera is not None:
            if any(c.name == camera.name for c in cameras):
                reader.problem(("camera", index, "name"), f"camera {camera.name!r} is named twice")
            cameras.append(camera)
    delivery = reader.table(DeliveryConfig, data.get("delivery", {}), ("delivery",))
    sinks = _read_sinks(reader, data.get("sink", {}), delivery or DeliveryConfig(), registered_sinks())
    names = {c.name for c in cameras}
    for sink in sinks:
        for camera_name in sink.cameras:
            if names and camera_name not in names:
                reader.problem(("sink", sink.name, "cameras"), f"no camera {camera_name!r} in this station")
    web = _read_web(reader, data["web"], station) if "web" in data else None
    if reader.problems or station is None or delivery is None:
        raise ConfigError(file, reader.problems)
    station = dataclasses.replace(station, audit=_audit_url(station.audit, file.parent))
    from flawscope.acquire.uri import resolve_source

    cameras = [dataclasses.replace(c, source=resolve_source(c.source, file.parent)) for c in cameras]
    loaded = StationConfig(file, station, tuple(cameras), delivery, tuple(sinks))
    if web is None:
        return loaded
    # The app reads what the line writes: the same audit store, image store and status file.
    web = dataclasses.replace(web, audit_url=station.audit, status_file=loaded.status_path)
    return dataclasses.replace(loaded, web=web)


def _read_web(reader: _Reader, data: Any, station: StationSection | None) -> Any:
    """``[web]`` as a :class:`~flawscope.web.config.WebConfig` (None when it has problems)."""
    if station is None:
        return None
    try:
        from flawscope.web.config import WebConfig
    except ModuleNotFoundError as exc:
        reader.problem(("web",), f"needs the web app's packages: pip install 'flawscope[web]' ({exc})")
        return None
    if station.store_images is None:
        reader.problem(
            ("web",), "the web app shows the stored images: set store_images in [station] (a folder)"
        )
        return None
    given = {"audit_url": "", "images": station.store_images, "station": f"{station.name}/web"}
    return reader.table(WebConfig, data, ("web",), **given, status_file=None)


def _read_sinks(
    reader: _Reader, data: Any, defaults: DeliveryConfig, known: Mapping[str, Any]
) -> list[SinkConfig]:
    if not isinstance(data, dict):
        reader.problem(("sink",), f"must be tables [sink.NAME], got {_kind(data)}")
        return []
    sinks = []
    for name, table in data.items():
        path: tuple[str | int, ...] = ("sink", name)
        if not isinstance(table, dict):
            reader.problem(path, f"must be a table, got {_kind(table)}")
            continue
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            reader.problem(path, "a sink name may hold letters, digits, '-' and '_' only")
        options = dict(table)
        kind = options.pop("type", None)
        if kind is None:
            reader.problem((*path, "type"), f"is required (one of: {', '.join(sorted(known))})")
            continue
        if kind not in known:
            reader.problem(
                (*path, "type"), f"unknown sink type {kind!r} (registered: {', '.join(sorted(known))})"
            )
            continue
        cameras = reader.value(tuple[str, ...], options.pop("cameras", []), (*path, "cameras"), {})
        enabled = reader.value(bool, options.pop("enabled", True), (*path, "enabled"), {})
        overrides = options.pop("delivery", {})
        delivery = None
        if isinstance(overrides, dict):
            merged = {**dataclasses.asdict(defaults)}
            base = reader.table(DeliveryConfig, overrides, (*path, "delivery"))
            if base is not None:
                merged.update({k: getattr(base, k) for k in overrides})
                delivery = DeliveryConfig(**merged)
        else:
            reader.problem((*path, "delivery"), f"must be a table, got {_kind(overrides)}")
        built = reader.table(known[kind].config, options, path)
        if built is None or delivery is None or cameras is _BAD or enabled is _BAD:
            continue
        sinks.append(SinkConfig(name, kind, cameras, enabled, delivery, built))
    return sinks
