"""Cost of the audit schema's query indexes (migration 3) on appending records, SQLite, same run.

Appends N records in transactions of 8 (what the line commits per batch, fsync'd: synchronous=FULL)
to a store with the indexes of schema 3 and to one where those indexes were dropped (schema 2's
layout), alternating rounds so both see the same machine load; then times three queries the web
dashboard and review queue make (by time window, by outcome in a window, by station in a window).
Prints a table and writes benchmarks/results/audit_store.json.

    python benchmarks/audit_store.py [--records 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from flawscope.audit import AuditLog
from flawscope.audit.schema import INDEXES
from flawscope.types import InspectionRecord, Outcome

BATCH = 8


def _records(n: int, start: float) -> list[InspectionRecord]:
    return [
        InspectionRecord(
            part_id=f"p-{i}",
            station=f"station-{i % 4}",
            acquired_at=start + i * 0.05,
            outcome=(Outcome.PASS, Outcome.PASS, Outcome.REVIEW, Outcome.FAIL)[i % 4],
            score=0.1 * (i % 50),
            normalized_score=0.01 * (i % 50),
            image_sha256=f"{i:064x}",
            model_hash="ab" * 32,
            model_version="abababababab.t1",
            threshold_version=1,
            latency_ms=12.0,
            source=f"gige://cam-{i % 4}",
            threshold_sha256="1" * 64,
            graph_sha256="2" * 64,
            signer="0123456789abcdef",
        )
        for i in range(n)
    ]


def _store(folder: Path, name: str, indexed: bool) -> str:
    url = f"sqlite:///{folder / name}"
    AuditLog.open(url).close()
    if not indexed:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            for since, index in INDEXES:
                if since == 3:
                    conn.exec_driver_sql(f"DROP INDEX {index.name}")
        engine.dispose()
    return url


def _append(url: str, records: list[InspectionRecord]) -> float:
    with AuditLog.open(url) as log:
        started = time.perf_counter()
        for i in range(0, len(records), BATCH):
            log.append_many(records[i : i + BATCH])
        return time.perf_counter() - started


def _queries(url: str, start: float, span: float) -> dict[str, float]:
    engine = sa.create_engine(url)
    window = (start + span * 0.4, start + span * 0.45)
    queries = {
        "time window": "SELECT count(*) FROM inspections WHERE acquired_at BETWEEN :a AND :b",
        "outcome in window": "SELECT count(*) FROM inspections WHERE outcome = 'review' "
        "AND acquired_at BETWEEN :a AND :b",
        "station in window": "SELECT count(*) FROM inspections WHERE station = 'station-1' "
        "AND acquired_at BETWEEN :a AND :b",
    }
    out = {}
    with engine.connect() as conn:
        for name, sql in queries.items():
            times = []
            for _ in range(20):
                started = time.perf_counter()
                conn.execute(sa.text(sql), {"a": window[0], "b": window[1]}).scalar()
                times.append(time.perf_counter() - started)
            out[name] = statistics.median(times) * 1000
    engine.dispose()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    start = 1_700_000_000.0
    rates: dict[str, list[float]] = {"schema 3 (indexed)": [], "without the schema-3 indexes": []}
    queries: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(args.rounds):
            for label, indexed in (("schema 3 (indexed)", True), ("without the schema-3 indexes", False)):
                url = _store(folder, f"{r}-{indexed}.db", indexed)
                seconds = _append(url, _records(args.records, start))
                rates[label].append(args.records / seconds)
                if r == args.rounds - 1:
                    queries[label] = _queries(url, start, args.records * 0.05)
    indexed, bare = (statistics.median(v) for v in rates.values())
    print(f"{'store':32} {'records/s (median)':>18}  rounds")
    for label, values in rates.items():
        print(f"{label:32} {statistics.median(values):18.0f}  {', '.join(f'{v:.0f}' for v in values)}")
    print(f"ratio indexed / without: {indexed / bare:.2f}")
    for label, timing in queries.items():
        print(f"{label}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in timing.items()))
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "records": args.records,
        "batch": BATCH,
        "appends_per_s": rates,
        "ratio_indexed_over_without": indexed / bare,
        "query_median_ms": queries,
    }
    out = Path(__file__).with_name("results") / "audit_store.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
