"""Where the PLC handshake's time goes: the station side, stage by stage, measured in its process.

A station with a PLC-triggered camera and an OPC UA tag-handshake sink runs in this process; the
PLC simulator (``flawscope plc-sim``, another process) triggers ``--parts`` parts one at a time.
Timestamps (``time.perf_counter``) are taken by wrapping the station's own functions, per part:

    trigger    the PLC's Trigger write reached the handshake (OPC UA loop thread)
    put        the trigger is queued for the camera
    got        the camera's acquisition thread took it
    commit0    the record thread starts the audit commit (after inspection: ``latency_ms``)
    commit1    the commit returned (SQLite: fsync with synchronous=FULL)
    notify     the sink's forwarder was handed the record
    deliver    the forwarder thread calls the sink
    loop       the OPC UA loop thread runs the delivery
    written    the result tags and the ResultReady toggle are written (readable by the PLC)

The inspection itself (the record's ``latency_ms``) is taken out of got->commit0. "PLC side" is the
PLC simulator's trigger-to-result time less trigger->written: its own OPC UA requests, the
subscription's notification and its read of the result tags.

    python benchmarks/factory_trace.py [--parts 300] [--sync FULL] [--scan-ms 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "integrate"))

from factory_peers import free_port, wait_port  # noqa: E402

import factory  # noqa: E402
from line import build_model  # noqa: E402

STEPS = ("trigger", "put", "got", "commit0", "commit1", "notify", "deliver", "loop", "written")


def instrument(marks: dict[str, dict[str, float]]) -> None:
    """Wrap the station's functions so that each stage of each part is timed (this process only)."""
    from flawscope.acquire.triggered import TriggerHub
    from flawscope.audit import AuditLog
    from flawscope.integrate.opcua import server
    from flawscope.integrate.opcua.handshake import Handshake
    from flawscope.integrate.outbox import Forwarder

    now = time.perf_counter

    def mark(part: str, key: str) -> None:
        marks.setdefault(part, {})[key] = now()

    put, get, append_many = TriggerHub.put, TriggerHub.get, AuditLog.append_many
    notify, deliver = Forwarder.notify, server.OpcuaServerSink.deliver
    run_delivery, write, trigger = (
        server.OpcuaServerSink._deliver,
        server._LocalTags.write,
        Handshake._trigger,
    )

    def put_(self: Any, camera: str, item: Any) -> None:
        mark(item.part_id, "put")
        put(self, camera, item)

    def get_(self: Any, camera: str, timeout_s: float | None = None) -> Any:
        item = get(self, camera, timeout_s)
        if item is not None:
            mark(item.part_id, "got")
        return item

    def append_many_(self: Any, records: Any) -> Any:
        records = list(records)
        for r in records:
            mark(r.part_id, "commit0")
        out = append_many(self, records)
        for r in records:
            mark(r.part_id, "commit1")
            marks[r.part_id]["inspection"] = r.latency_ms
        return out

    def notify_(self: Any, record: Any) -> None:
        mark(record.part_id, "notify")
        notify(self, record)

    def deliver_(self: Any, records: Any) -> Any:
        for r in records:
            mark(r.part_id, "deliver")
        return deliver(self, records)

    async def run_delivery_(self: Any, records: Any, backlog: int) -> Any:
        for r in records:
            mark(r.part_id, "loop")
        return await run_delivery(self, records, backlog)

    async def write_(self: Any, values: dict[str, Any]) -> None:
        await write(self, values)
        if "ResultPartId" in values:
            mark(values["ResultPartId"], "written")

    async def trigger_(self: Any, high: bool) -> None:
        started = now()
        await trigger(self, high)
        if high and self.next_part_id:
            marks.setdefault(self.next_part_id, {}).setdefault("trigger", started)

    TriggerHub.put, TriggerHub.get, AuditLog.append_many = put_, get_, append_many_  # type: ignore[method-assign]
    Forwarder.notify, server.OpcuaServerSink.deliver = notify_, deliver_  # type: ignore[method-assign]
    server.OpcuaServerSink._deliver = run_delivery_  # type: ignore[method-assign]
    server._LocalTags.write, Handshake._trigger = write_, trigger_  # type: ignore[method-assign]


def trace(
    marks: dict[str, dict[str, float]],
    work: Path,
    data: Path,
    bundle: Path,
    parts: int,
    sync: str,
    scan_ms: float,
) -> dict[str, Any]:
    from flawscope.config import load_config
    from flawscope.station import Station

    marks.clear()
    port = free_port()
    path = factory.station_toml(
        work / "station.toml",
        data=data,
        bundle=bundle,
        source=f"sim://{data}?rate=0&count=0&defect_ratio=0.1",
        sinks=factory.sink_tables(None, None, port),
        trigger="plc",
        sync=sync,
    )
    os.chdir(work)
    plc = [*factory.PY, "plc-sim", "--connect", f"opc.tcp://127.0.0.1:{port}/flawscope"]
    plc += ["--deadline-ms", "5000", "--scan-ms", str(scan_ms)]
    with Station(load_config(path)) as station:
        running = threading.Thread(target=lambda: station.run(drain_s=5), daemon=True)
        running.start()
        wait_port(port, 120)
        subprocess.run([*plc, "--parts", "20", "--prefix", "warm"], check=True, capture_output=True)
        marks.clear()
        record = work / "plc.jsonl"
        subprocess.run(
            [*plc, "--parts", str(parts), "--prefix", "hs", "--record", str(record)],
            check=True,
            capture_output=True,
        )
        station.stop()
        running.join(60)
    at_plc = {}
    for line in record.read_text().splitlines():
        item = json.loads(line)
        if "trigger_to_result_ms" in item:
            at_plc[item["part_id"]] = item["trigger_to_result_ms"]
    rows: dict[str, list[float]] = {}
    for part, t in marks.items():
        if not all(k in t for k in (*STEPS, "inspection")):
            continue
        for a, b in itertools.pairwise(STEPS):
            span = (t[b] - t[a]) * 1000
            rows.setdefault(f"{a} -> {b}", []).append(span - (t["inspection"] if a == "got" else 0.0))
        station_side = (t["written"] - t["trigger"]) * 1000 - t["inspection"]
        rows.setdefault("station side (trigger -> written)", []).append(station_side)
        if part in at_plc:
            rows.setdefault("PLC side (PLC's total - trigger -> written)", []).append(
                at_plc[part] - station_side - t["inspection"]
            )
            rows.setdefault("overhead at the PLC (total - inspection)", []).append(
                at_plc[part] - t["inspection"]
            )
    stats = {
        name: {
            "n": len(v),
            **{f"p{q}": round(float(np.percentile(v, q)), 2) for q in (50, 90, 99)},
            "mean": round(float(np.mean(v)), 2),
        }
        for name, v in rows.items()
    }
    return {"sync": sync, "scan_ms": scan_ms, "parts": parts, "stages_ms": stats}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--parts", type=int, default=300)
    parser.add_argument("--sync", nargs="+", default=["FULL", "NORMAL"], help="SQLite synchronous modes")
    parser.add_argument("--scan-ms", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "factory_trace.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flawscope-trace-") as tmp:
        data, bundle = build_model(Path(tmp) / "model", args.size)
        results: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cpus": os.cpu_count(),
            "load": os.getloadavg()[0],
            "runs": [],
        }
        marks: dict[str, dict[str, float]] = {}
        instrument(marks)
        for sync in args.sync:
            work = Path(tmp) / f"trace-{sync.lower()}"
            work.mkdir()
            run = trace(marks, work, data, bundle, args.parts, sync, args.scan_ms)
            results["runs"].append(run)
            print(f"synchronous={sync}, scan {args.scan_ms} ms, load {os.getloadavg()[0]:.1f}")
            for name, s in run["stages_ms"].items():
                print(f"  {name:46s} p50 {s['p50']:7.2f}  p90 {s['p90']:7.2f}  p99 {s['p99']:7.2f}")
        results["load_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
