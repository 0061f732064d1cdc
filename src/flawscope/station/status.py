"""A station's live status: per-camera counters and per-sink delivery state, in memory and on disk.

The running station rewrites its status file (JSON, atomically) every ``status_interval_s``;
``flawscope station status`` reads it, and adds what the audit database says about each sink
(cursor, backlog, dead letters), which holds also when the station is not running.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flawscope.integrate.outbox import SinkStatus
from flawscope.jsonsafe import finite_or_none
from flawscope.line import LineSummary


@dataclass(frozen=True)
class StationStatus:
    """A snapshot of the whole station.

    Attributes:
        station: station name.
        running: False in the final snapshot.
        updated_at: when it was taken (seconds since the epoch).
        pid: the station's process id.
        cameras: each camera's line summary.
        sinks: each sink's delivery state.
        sources: each camera's source health (``connected``, ``missed``, ``last_error``...).
        drift: each monitored camera's drift-monitor summary
            (:meth:`flawscope.monitor.MonitorSummary.to_dict`: level, every statistic, recent events).
    """

    station: str
    running: bool
    updated_at: float
    pid: int
    cameras: Mapping[str, LineSummary] = field(default_factory=dict)
    sinks: Mapping[str, SinkStatus] = field(default_factory=dict)
    sources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    drift: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as null)."""
        data = {
            "station": self.station,
            "running": self.running,
            "updated_at": self.updated_at,
            "pid": self.pid,
            "cameras": {k: v.to_dict() for k, v in self.cameras.items()},
            "sinks": {k: dataclasses.asdict(v) for k, v in self.sinks.items()},
            "sources": {k: dict(v) for k, v in self.sources.items()},
            "drift": {k: dict(v) for k, v in self.drift.items()},
        }
        return finite_or_none(data)


def write_status(path: Path, status: StationStatus) -> None:
    """Replace the status file atomically (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(status.to_dict(), out, indent=1)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status a station wrote (None when there is none or it cannot be read)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_live(data: Mapping[str, Any], interval_s: float) -> bool:
    """The status file belongs to a station running now: its process exists and it is fresh."""
    fresh = time.time() - float(data.get("updated_at") or 0) < max(5.0, 5 * interval_s)
    return bool(data.get("running")) and fresh and process_alive(int(data.get("pid") or 0))


def status_line(status: StationStatus) -> str:
    """One line for the terminal: per camera, then per sink."""
    parts = []
    for name, s in status.cameras.items():
        rejects = s.rejected
        text = f"{name}: {s.recorded} rec ({rejects} rej) {s.recent_throughput:.1f}/s"
        drift = status.drift.get(name)
        if drift and drift.get("level") != "ok":
            moved = [str(x["name"]) for x in drift.get("stats", ()) if x.get("level") != "ok"]
            text += f" DRIFT {drift['level']}: {', '.join(moved)}"
        parts.append(text)
    for name, sink in status.sinks.items():
        state = "up" if sink.connected else sink.state
        text = f"{name}[{state}] backlog {sink.backlog} @{sink.last_delivered_seq}"
        if sink.dead_letters:
            text += f" dead {sink.dead_letters}"
        if sink.last_error:
            text += f" ({sink.last_error[:60]})"
        parts.append(text)
    return " | ".join(parts)
