"""A station in its own process, with the fake inspector (the soak test kills it with SIGKILL).

Usage: ``python station_child.py STATION_TOML TOTAL RATE``: inspects the parts from the first one not
yet in the audit log up to TOTAL, at RATE parts per second, then drains and exits.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from factory_helpers import ArraySource, fake_loader

from flawscope.config import load_config
from flawscope.station import Station


def main() -> None:
    config = load_config(sys.argv[1])
    total, rate = int(sys.argv[2]), float(sys.argv[3])
    database = Path(config.station.audit.removeprefix("sqlite:///"))
    done = 0
    if database.exists():
        with sqlite3.connect(database) as conn:
            done = conn.execute("select count(*) from inspections").fetchone()[0]
    source = ArraySource(max(0, total - done), rate=rate, start=done)
    with Station(config, inspector_loader=fake_loader, sources={"top": source}) as station:
        station.run(drain_s=60)


if __name__ == "__main__":
    main()
