"""Reading a ``station.toml``: the only place that parses TOML."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flawscope.config.reader import BAD, Reader, key_lines, kind_of
from flawscope.config.records import (
    CameraConfig,
    ConfigError,
    DeliveryConfig,
    Problem,
    SinkConfig,
    StationConfig,
    StationSection,
)


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
    reader = Reader(file.parent, key_lines(text))
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


def _read_web(reader: Reader, data: Any, station: StationSection | None) -> Any:
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
    reader: Reader, data: Any, defaults: DeliveryConfig, known: Mapping[str, Any]
) -> list[SinkConfig]:
    if not isinstance(data, dict):
        reader.problem(("sink",), f"must be tables [sink.NAME], got {kind_of(data)}")
        return []
    sinks = []
    for name, table in data.items():
        path: tuple[str | int, ...] = ("sink", name)
        if not isinstance(table, dict):
            reader.problem(path, f"must be a table, got {kind_of(table)}")
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
            reader.problem((*path, "delivery"), f"must be a table, got {kind_of(overrides)}")
        built = reader.table(known[kind].config, options, path)
        if built is None or delivery is None or cameras is BAD or enabled is BAD:
            continue
        sinks.append(SinkConfig(name, kind, cameras, enabled, delivery, built))
    return sinks
