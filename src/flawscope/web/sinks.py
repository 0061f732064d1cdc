"""Where the dashboard reads the station's sinks from, when the station does not hand them over.

Their delivery state is in the audit database; when the station's status file is given, what the
running station says of each (connected, last error) is added.

The cursor tables hold also when no station runs: a sink's backlog is the records committed after
its cursor, which is what waits for delivery whoever reads it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from flawscope.audit.schema import inspections, sink_cursors, sink_dead_letters
from flawscope.station.status import read_status
from flawscope.web.database import WebDB

STALE_S = 10.0  # a status file older than this is from a station that is not running


class SinkReader:
    """A callable giving every sink's state (the live feed calls it once per snapshot).

    Args:
        db: the audit database.
        status_file: the running station's status file (optional).
        min_interval_s: the database is read at most this often.
    """

    def __init__(self, db: WebDB, status_file: Path | None = None, min_interval_s: float = 2.0) -> None:
        self.db = db
        self.status_file = status_file
        self.min_interval_s = min_interval_s
        self._last: tuple[float, list[dict[str, Any]]] = (0.0, [])

    def __call__(self) -> list[dict[str, Any]]:
        """Every sink: ``name``, ``state``, ``backlog``, ``last_error``, ``dead_letters``, ``connected``."""
        now = time.monotonic()
        if now - self._last[0] < self.min_interval_s:
            return self._last[1]
        with self.db.read() as conn:
            head = int(conn.execute(sa.select(sa.func.max(inspections.c.seq))).scalar_one() or 0)
            cursors = conn.execute(sa.select(sink_cursors)).mappings().all()
            dead: dict[str, int] = dict(
                conn.execute(
                    sa.select(sink_dead_letters.c.sink, sa.func.count()).group_by(sink_dead_letters.c.sink)
                ).all()
            )
        live = self._live()
        found = []
        for row in sorted(cursors, key=lambda r: str(r["sink"])):
            name = str(row["sink"])
            backlog = max(0, head - int(row["seq"]))
            state = "disabled" if row["disabled"] else ("delivering" if backlog else "idle")
            entry: dict[str, Any] = {
                "name": name,
                "state": state,
                "backlog": backlog,
                "dead_letters": int(dead.get(name, 0)),
                "last_error": str(row["disabled"] or ""),
                "connected": None,
            }
            if name in live:
                entry.update(
                    {k: live[name][k] for k in ("state", "last_error", "connected") if k in live[name]}
                )
            found.append(entry)
        self._last = (now, found)
        return found

    def _live(self) -> dict[str, dict[str, Any]]:
        if self.status_file is None:
            return {}
        status = read_status(self.status_file)
        if (
            not status
            or not status.get("running")
            or time.time() - float(status.get("updated_at", 0)) > STALE_S
        ):
            return {}
        sinks = status.get("sinks")
        return sinks if isinstance(sinks, dict) else {}
