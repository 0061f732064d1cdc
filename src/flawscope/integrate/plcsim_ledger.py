"""What the simulated PLC triggered and received: counts, latencies and the record of every result.

A result id seen before is a duplicate, a lower seq after a higher is out of order, a result later
than ``deadline_ms`` after its trigger is late, and a triggered part without its result when the
run ends is missed. :class:`~flawscope.integrate.plcsim.PlcSim` tells the ledger of each trigger
and each result, whichever way (tags, methods, its own server) it talks to the station.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class PlcSimStats:
    """What the simulated PLC saw."""

    triggered: int = 0
    results: int = 0
    duplicates: int = 0
    missed: int = 0
    late: int = 0
    out_of_order: int = 0
    reconnects: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Counts and latency percentiles (ms)."""
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        pct = {f"p{p}": float(np.percentile(lat, p)) for p in (50, 90, 99)} if lat.size else {}
        return {
            "triggered": self.triggered,
            "results": self.results,
            "duplicates": self.duplicates,
            "missed": self.missed,
            "late": self.late,
            "out_of_order": self.out_of_order,
            "reconnects": self.reconnects,
            "latency_ms": {"n": int(lat.size), **pct, "max": float(lat.max()) if lat.size else None},
        }


class ResultLedger:
    """Counts of one simulated PLC's run (:class:`PlcSimStats`), by result id and trigger.

    Args:
        deadline_ms: a result later than this after its trigger counts as late.
    """

    def __init__(self, deadline_ms: float) -> None:
        self.deadline_ms = deadline_ms
        self.stats = PlcSimStats()
        self.seen: set[str] = set()
        self.last_seq = 0
        self.triggered_at: dict[str, float] = {}
        self.received: dict[str, float] = {}
        self._file: Any = None

    def open(self, record: Path | None) -> None:
        """Append every result received to ``record`` (JSON lines); None: keep no record."""
        if record is not None:
            self._file = record.open("a", encoding="utf-8")

    def trigger(self, part_id: str) -> None:
        """A part was triggered now: its result is awaited."""
        self.triggered_at[part_id] = time.perf_counter()
        self.stats.triggered += 1

    def got(self, result_id: str, seq: int, part_id: str, outcome_code: int, extra: dict[str, Any]) -> None:
        """Count a result received (the trigger's ``part_id`` gives its latency) and record it."""
        now = time.perf_counter()
        if result_id in self.seen:
            self.stats.duplicates += 1
        else:
            self.seen.add(result_id)
            self.stats.results += 1
            if seq < self.last_seq:
                self.stats.out_of_order += 1
            self.last_seq = max(self.last_seq, seq)
        sent = self.triggered_at.pop(part_id, None)
        ms: float | None = None
        if sent is not None:
            ms = (now - sent) * 1000
            self.stats.latencies_ms.append(ms)
            self.received[part_id] = ms
            if ms > self.deadline_ms:
                self.stats.late += 1
        if self._file is not None:
            line = {"id": result_id, "seq": seq, "part_id": part_id, "outcome_code": outcome_code, **extra}
            if ms is not None:
                line["trigger_to_result_ms"] = ms
            self._file.write(json.dumps(line) + "\n")
            self._file.flush()

    def close(self) -> None:
        """Count the triggered parts still without a result as missed; close the record file."""
        self.stats.missed = len(self.triggered_at)
        if self._file is not None:
            self._file.close()
            self._file = None
