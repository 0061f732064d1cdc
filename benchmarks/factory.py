"""Benchmarks of a station talking to the factory: delivery under outages and crashes, PLC handshake
latency, sink overhead. Real peers on 127.0.0.1: the Debian mosquitto broker, a webhook receiver
(Standard Webhooks signatures checked), the asyncua PLC simulator (``flawscope plc-sim``).

(a) soak: a station (``flawscope station run`` in a subprocess) inspects ``--soak`` simulated parts at
    ``--rate`` parts/s with three sinks (MQTT, webhook, OPC UA tag handshake). The broker, the webhook
    receiver and the PLC simulator are each cut for 10-30 s and restarted; the station itself is
    killed with SIGKILL twice mid-delivery and restarted. Checked per peer against the audit log:
    results lost (target 0), order (first arrival of each seq in seq order), duplicates (allowed
    only with the same id).
(b) handshake: a PLC-triggered camera; the PLC simulator triggers ``--handshake`` parts one at a
    time over the tag handshake (1 ms scan) and times trigger -> result readable at the PLC; the
    overhead is that time minus the part's own acquisition-to-verdict time (``latency_ms`` of its
    audit record). With and without Basic256Sha256 Sign&Encrypt, and with SQLite synchronous FULL
    (fsync per commit, the default) and NORMAL. Targets: p50 <= 5 ms, p99 <= 20 ms.
(c) overhead: the same station with no sink and with all three, alternately in one run, parts as
    fast as the line takes them; target ratio >= 0.9. The sinks' largest backlog and the time they
    take to drain after the line ends show whether they keep up.

Prints a table and writes benchmarks/results/factory.json.

    python benchmarks/factory.py [--soak 2000 --rate 20] [--handshake 300 --scan-ms 1]
                                 [--overhead 1500 --repeats 3]

Each handshake run also reports the CPU milliseconds per part of the station and of the PLC
simulator (the station's from /proc over the measured parts, the simulator's less its warm-up run),
which hold on a busy machine where wall-clock latencies mostly measure the wait for a core.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import itertools
import json
import os
import platform
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "integrate"))

from factory_peers import Mosquitto, MqttCollector, WebhookReceiver, free_port, wait_port  # noqa: E402

from line import build_model  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"factory-benchmark-secret-32bytes").decode()
PY = [sys.executable, "-m", "flawscope.cli"]


def station_toml(
    path: Path,
    *,
    data: Path,
    bundle: Path,
    source: str,
    sinks: str,
    trigger: str = "free",
    sync: str = "FULL",
) -> Path:
    text = textwrap.dedent(
        f"""\
        [station]
        name = "press-3"
        enterprise = "acme"
        site = "lyon"
        line = "line-2"
        audit = "sqlite:///audit.db"
        audit_synchronous = "{sync}"
        status_interval_s = 0.5

        [[camera]]
        name = "top"
        source = "{source}"
        bundle = "{bundle}"
        batch_size = 8
        trigger = "{trigger}"
        threads = 1

        [delivery]
        retry_initial_s = 0.2
        retry_max_s = 2.0
        cursor_interval_s = 0.25
        """
    )
    path.write_text(text + sinks)
    return path


def sink_tables(
    broker: int | None, webhook: str | None, opcua: int | None, security: str = "", ack_s: float = 2.0
) -> str:
    out = []
    if broker is not None:
        out.append(
            f'[sink.broker]\ntype = "mqtt"\nport = {broker}\nusername = "{Mosquitto.USER}"\n'
            f'password = "{Mosquitto.PASSWORD}"\ntimeout_s = 3\n'
        )
    if webhook is not None:
        out.append(
            f'[sink.mes]\ntype = "webhook"\nurl = "{webhook}"\nsecret = "{SECRET}"\n'
            'mode = "batch"\ntimeout_s = 2\n'
        )
    if opcua is not None:
        out.append(
            f'[sink.plc]\ntype = "opcua-server"\nendpoint = "opc.tcp://127.0.0.1:{opcua}/flawscope"\n'
            f'handshake = "tags"\nack_timeout_s = {ack_s}\nbuffer_depth = 16\n'
            + (security or 'security = ["None"]\nallow_anonymous = true\n')
        )
    return "\n".join(out)


def audit_records(db: Path) -> list[tuple[int, str, str, float]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(
                "select seq, part_id, record_hash, coalesce(latency_ms, 'nan') from inspections order by seq"
            ).fetchall()
    except sqlite3.OperationalError:  # the station is creating the store
        return []


def result_id(seq: int, record_hash: str) -> str:
    return f"{seq}-{record_hash[:16]}"


def check_peer(name: str, expected: dict[int, str], received: list[tuple[int, str]]) -> dict[str, Any]:
    """Lost, order and duplicates of one peer's (seq, id) arrivals against the audit log."""
    seen: dict[int, set[str]] = {}
    first: list[int] = []
    for seq, rid in received:
        if seq not in seen:
            first.append(seq)
        seen.setdefault(seq, set()).add(rid)
    lost = sorted(set(expected) - set(seen))
    unknown = sorted(set(seen) - set(expected))
    conflicting = [s for s, ids in seen.items() if len(ids) > 1 or (s in expected and expected[s] not in ids)]
    inversions = sum(1 for a, b in itertools.pairwise(first) if b < a)
    return {
        "peer": name,
        "expected": len(expected),
        "received_unique": len(seen),
        "deliveries": len(received),
        "lost": len(lost),
        "lost_seqs": lost[:20],
        "unknown": len(unknown),
        "duplicates": len(received) - len(seen),
        "duplicates_with_another_id": len(conflicting),
        "order_inversions": inversions,
    }


# --------------------------------------------------------------------------------------- soak


class Proc:
    """A subprocess with its log, killable."""

    def __init__(self, command: list[str], cwd: Path, log: Path) -> None:
        self.command, self.cwd, self.log = command, cwd, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(self.command, cwd=self.cwd, stdout=out, stderr=out)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(60)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def bench_soak(work: Path, data: Path, bundle: Path, parts: int, rate: float) -> dict[str, Any]:
    soak = work / "soak"
    soak.mkdir()
    broker = Mosquitto(soak / "broker").start()
    collector = MqttCollector(broker.port, topic="acme/#", client_id="mes-collector")
    collector.subscribed.wait(10)
    receiver = WebhookReceiver(base64.b64decode(SECRET[6:])).start()
    opcua = free_port()
    config = soak / "station.toml"
    db = soak / "audit.db"
    events: list[str] = []
    started = time.monotonic()

    def note(text: str) -> None:
        events.append(f"{time.monotonic() - started:6.1f} s  {text}")
        print(events[-1], flush=True)

    def write_config() -> None:
        done = len(audit_records(db))
        query = (
            f"rate={rate}&defect_ratio=0.1&count={max(1, parts - done)}&start={done}&seed={done}&prefix=soak"
        )
        source = f"sim://{data}?{query}"
        station_toml(
            config,
            data=data,
            bundle=bundle,
            source=source,
            sinks=sink_tables(broker.port, receiver.url, opcua),
        )

    station = Proc([*PY, "station", "run", str(config), "--drain-timeout", "120"], soak, soak / "station.log")
    plc = Proc(
        [
            *PY,
            "plc-sim",
            "--connect",
            f"opc.tcp://127.0.0.1:{opcua}/flawscope",
            "--record",
            str(soak / "plc.jsonl"),
        ],
        soak,
        soak / "plc.log",
    )
    write_config()
    station.start()
    plc.start()
    note("station and PLC simulator started")
    plan = [
        (0.10, "broker", 15.0),
        (0.30, "station", 0.0),
        (0.42, "webhook", 20.0),
        (0.62, "plc", 12.0),
        (0.80, "station", 0.0),
    ]

    def cut(what: str, seconds: float) -> None:
        if what == "broker":
            note(f"broker cut for {seconds:.0f} s")
            broker.stop()
            time.sleep(seconds)
            broker.start()
            note("broker back")
        elif what == "webhook":
            note(f"webhook receiver cut for {seconds:.0f} s")
            receiver.stop()
            time.sleep(seconds)
            receiver.start()
            note("webhook receiver back")
        elif what == "plc":
            note(f"PLC simulator killed for {seconds:.0f} s")
            plc.kill()
            time.sleep(seconds)
            plc.start()
            note("PLC simulator back")

    workers = []
    for fraction, what, seconds in plan:
        # Each cut comes once that share of the parts is recorded (not at a time: start-up is slow
        # under load, and a kill before the first record would test nothing).
        while len(audit_records(db)) < fraction * parts and station.alive():
            time.sleep(0.2)
        if what == "station":
            note(f"station SIGKILL ({len(audit_records(db))} records committed)")
            station.kill()
            time.sleep(2)
            write_config()
            station.start()
            note("station restarted")
        else:
            worker = threading.Thread(target=cut, args=(what, seconds))
            worker.start()
            workers.append(worker)
    for worker in workers:
        worker.join()
    assert station.process is not None
    station.process.wait()
    note(f"station finished (exit {station.process.returncode})")
    time.sleep(3)  # the PLC's last acknowledgement and the collector's last messages
    plc.kill(signal.SIGTERM)
    records = audit_records(db)
    expected = {seq: result_id(seq, digest) for seq, _, digest, _ in records}
    mqtt = [(m["seq"], m["id"]) for m in collector.results()]
    webhook = [(m["seq"], m["id"]) for m in receiver.delivered()]
    plc_lines = [json.loads(line) for line in (soak / "plc.jsonl").read_text().splitlines() if line.strip()]
    opc = [(int(x["seq"]), x["id"]) for x in plc_lines]
    collector.close()
    receiver.stop()
    broker.stop()
    parts_recorded = len({part for _, part, _, _ in records})
    return {
        "parts": parts,
        "rate": rate,
        "records": len(records),
        "distinct_parts_recorded": parts_recorded,
        "wall_s": round(time.monotonic() - started, 1),
        "events": events,
        "peers": [
            check_peer("mqtt", expected, mqtt),
            check_peer("webhook", expected, webhook),
            check_peer("opcua-plc", expected, opc),
        ],
        "webhook_bad_signatures": receiver.bad_signatures,
    }


# ---------------------------------------------------------------------------------- handshake


def bench_handshake(
    work: Path, data: Path, bundle: Path, parts: int, secure: bool, sync: str, scan_ms: float = 1.0
) -> dict[str, Any]:
    from flawscope.integrate.certs import make_certificate

    folder = work / f"handshake-{'secure' if secure else 'plain'}-{sync.lower()}"
    folder.mkdir(exist_ok=True)
    port = free_port()
    security = ""
    plc_args: list[str] = []
    env = dict(os.environ)
    if secure:
        server = make_certificate(
            folder / "pki", "server", common_name="station", application_uri="urn:bench:station", der=True
        )
        client = make_certificate(
            folder / "pki", "plc", common_name="plc", application_uri="urn:bench:plc", der=True
        )
        (folder / "trusted").mkdir()
        (folder / "trusted" / "plc.der").write_bytes(client.cert.read_bytes())
        (folder / "station-trust").mkdir()
        (folder / "station-trust" / "server.der").write_bytes(server.cert.read_bytes())
        env["PLC_PASSWORD"] = "bench-password"
        security = (
            'security = ["Basic256Sha256_SignAndEncrypt"]\napplication_uri = "urn:bench:station"\n'
            f'certificate = "{server.cert}"\nprivate_key = "{server.key}"\n'
            f'trust_store = "{folder / "trusted"}"\n'
            'users = { plc = "PLC_PASSWORD" }\n'
        )
        plc_args = [
            "--security",
            "Basic256Sha256_SignAndEncrypt",
            "--cert",
            str(client.cert),
            "--key",
            str(client.key),
            "--trust",
            str(folder / "station-trust"),
            "--user",
            "plc",
            "--password-env",
            "PLC_PASSWORD",
            "--application-uri",
            "urn:bench:plc",
        ]
    config = station_toml(
        folder / "station.toml",
        data=data,
        bundle=bundle,
        source=f"sim://{data}?rate=0&count=0&defect_ratio=0.1",
        sinks=sink_tables(None, None, port, security=security),
        trigger="plc",
        sync=sync,
    )
    station = subprocess.Popen(
        [*PY, "station", "run", str(config)],
        cwd=folder,
        env=env,
        stdout=(folder / "station.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, 120)
        record = folder / "plc.jsonl"
        warm_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        warmup = subprocess.run(
            [
                *PY,
                "plc-sim",
                "--connect",
                f"opc.tcp://127.0.0.1:{port}/flawscope",
                "--parts",
                "20",
                "--prefix",
                "warm",
                "--deadline-ms",
                "5000",
                *plc_args,
            ],
            env=env,
            capture_output=True,
            timeout=300,
        )
        assert warmup.returncode == 0, warmup.stderr.decode()[-2000:]
        # CPU time of both processes over the measured parts: what the handshake costs whatever the
        # load (wall-clock latencies on a shared machine mostly measure waiting for a core).
        station_cpu = _cpu_s(station.pid)
        plc_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        warm_cpu_s = _rusage_s(plc_cpu) - _rusage_s(warm_cpu)
        run = subprocess.run(
            [
                *PY,
                "plc-sim",
                "--connect",
                f"opc.tcp://127.0.0.1:{port}/flawscope",
                "--parts",
                str(parts),
                "--prefix",
                "hs",
                "--deadline-ms",
                "5000",
                "--scan-ms",
                str(scan_ms),
                "--record",
                str(record),
                "--json",
                str(folder / "plc.json"),
                *plc_args,
            ],
            env=env,
            capture_output=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr.decode()[-2000:]
        station_cpu = _cpu_s(station.pid) - station_cpu
        # The PLC simulator's start (imports, connection) is paid by both of its runs: the measured
        # run less the 20-part warm-up is the CPU of (parts - 20) parts.
        plc_cpu_s = _rusage_s(resource.getrusage(resource.RUSAGE_CHILDREN)) - _rusage_s(plc_cpu) - warm_cpu_s
        time.sleep(1.5)  # the next status file
        status = json.loads((folder / "press-3.status.json").read_text())
        station_side = status["sinks"]["plc"]["details"]["cameras"]["top"]["handshake"]["overhead_ms"]
    finally:
        station.send_signal(signal.SIGTERM)
        station.wait(120)
    summary = json.loads((folder / "plc.json").read_text())
    by_part = {part: lat for _, part, _, lat in audit_records(folder / "audit.db")}
    totals, overheads, inspection = [], [], []
    for line in record.read_text().splitlines():
        item = json.loads(line)
        if "trigger_to_result_ms" in item and item["part_id"] in by_part:
            total, own = item["trigger_to_result_ms"], float(by_part[item["part_id"]])
            totals.append(total)
            inspection.append(own)
            overheads.append(total - own)

    def pct(values: list[float]) -> dict[str, float]:
        arr = np.asarray(values)
        return {k: round(float(np.percentile(arr, q)), 2) for k, q in (("p50", 50), ("p90", 90), ("p99", 99))}

    return {
        "security": "Basic256Sha256_SignAndEncrypt" if secure else "None",
        "audit_synchronous": sync,
        "parts": parts,
        "missed": summary["missed"],
        "duplicates": summary["duplicates"],
        "trigger_to_result_ms": pct(totals),
        "inspection_ms": pct(inspection),
        "overhead_ms": pct(overheads),
        "station_side_overhead_ms": {k: round(v, 2) for k, v in station_side.items()},
        "cpu_ms_per_part": {
            "station": round(station_cpu * 1000 / parts, 2),
            "plc_sim": round(plc_cpu_s * 1000 / max(1, parts - 20), 2),
        },
        "scan_ms": scan_ms,
        "targets": {"p50": 5.0, "p99": 20.0},
    }


def _rusage_s(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------- overhead


class _Watch:
    """Status callback: each sink's largest backlog, and how long after the line ended it drained."""

    def __init__(self) -> None:
        self.backlog: dict[str, int] = {}
        self.line_end = 0.0
        self.drained: dict[str, float] = {}

    def __call__(self, status: Any) -> None:
        for name, sink in status.sinks.items():
            self.backlog[name] = max(self.backlog.get(name, 0), sink.backlog)
            if self.line_end and sink.backlog == 0 and name not in self.drained:
                self.drained[name] = time.monotonic() - self.line_end
        if not self.line_end and status.cameras and not all(c.running for c in status.cameras.values()):
            self.line_end = time.monotonic()


def bench_overhead(work: Path, data: Path, bundle: Path, parts: int, repeats: int) -> dict[str, Any]:
    from flawscope.config import load_config
    from flawscope.station import Station

    folder = work / "overhead"
    folder.mkdir(exist_ok=True)
    broker = Mosquitto(folder / "broker").start()
    collector = MqttCollector(broker.port, topic="acme/#", client_id="overhead-collector")
    receiver = WebhookReceiver(base64.b64decode(SECRET[6:])).start()
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "all": []}
    for repeat in range(repeats):
        for kind in ("none", "all"):
            run_dir = folder / f"{kind}-{repeat}"
            run_dir.mkdir(exist_ok=True)
            port = free_port()
            sinks = sink_tables(broker.port, receiver.url, port) if kind == "all" else ""
            source = f"sim://{data}?rate=0&count={parts}&defect_ratio=0.1&seed={repeat}"
            config = load_config(
                station_toml(run_dir / "station.toml", data=data, bundle=bundle, source=source, sinks=sinks)
            )
            plc = None
            if kind == "all":
                plc = subprocess.Popen(
                    [*PY, "plc-sim", "--connect", f"opc.tcp://127.0.0.1:{port}/flawscope"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            watch = _Watch()
            with Station(config) as station:
                # The cameras start once every sink is connected (the OPC UA server listening).
                summary = station.run(drain_s=120, on_status=watch)
            if plc is not None:
                plc.terminate()
                plc.wait(30)
            camera = summary.cameras["top"]
            runs[kind].append(
                {
                    "parts_per_s": round(camera.throughput, 2),
                    "elapsed_s": round(camera.elapsed_s, 2),
                    "max_backlog": watch.backlog,
                    "drain_after_line_s": {k: round(v, 2) for k, v in watch.drained.items()},
                    "final_backlog": {k: s.backlog for k, s in summary.status.sinks.items()},
                }
            )
            print(kind, runs[kind][-1], flush=True)
    collector.close()
    receiver.stop()
    broker.stop()
    none = statistics.median(r["parts_per_s"] for r in runs["none"])
    every = statistics.median(r["parts_per_s"] for r in runs["all"])
    return {"parts": parts, "runs": runs, "ratio": round(every / none, 3), "target_ratio": 0.9}


def table(results: dict[str, Any]) -> str:
    lines = [
        f"factory benchmarks, {results['date']} ({results['machine']['cpus']} cpus, load {results['load']})"
    ]
    if "soak" in results:
        soak = results["soak"]
        head = f"(a) soak: {soak['records']} records of {soak['parts']} parts at {soak['rate']}/s"
        lines.append(f"{head}, {soak['wall_s']} s")
        for peer in soak["peers"]:
            lines.append(
                f"    {peer['peer']:10s} lost {peer['lost']}  "
                f"received {peer['received_unique']}/{peer['expected']}  "
                f"dups {peer['duplicates']} (other id: {peer['duplicates_with_another_id']})  "
                f"order inversions {peer['order_inversions']}"
            )
    for run in results.get("handshake", []):
        o, t = run["overhead_ms"], run["trigger_to_result_ms"]
        lines.append(
            f"(b) handshake {run['security']:29s} sync {run['audit_synchronous']:6s} "
            f"overhead p50 {o['p50']} p99 {o['p99']} ms"
            f"  (trigger->result p50 {t['p50']} p99 {t['p99']}, "
            f"inspection p50 {run['inspection_ms']['p50']}; "
            f"station side p50 {run['station_side_overhead_ms'].get('p50')} "
            f"p99 {run['station_side_overhead_ms'].get('p99')}; CPU ms/part station "
            f"{run['cpu_ms_per_part']['station']} plc-sim {run['cpu_ms_per_part']['plc_sim']})"
        )
    if "overhead" in results:
        over = results["overhead"]
        lines.append(f"(c) all sinks / no sink throughput: {over['ratio']} (target {over['target_ratio']})")
        for kind, runs in over["runs"].items():
            for run in runs:
                lines.append(
                    f"    {kind:4s} {run['parts_per_s']} parts/s  max backlog {run['max_backlog']}  "
                    f"drain {run['drain_after_line_s']}"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--soak", type=int, default=2000, help="parts in the soak (0: skip)")
    parser.add_argument("--rate", type=float, default=20.0, help="soak parts per second")
    parser.add_argument(
        "--handshake", type=int, default=300, help="triggered parts per handshake run (0: skip)"
    )
    parser.add_argument(
        "--scan-ms", type=float, default=1.0, help="the PLC simulator's scan (0: told of each change at once)"
    )
    parser.add_argument("--overhead", type=int, default=1500, help="parts per overhead run (0: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="overhead runs of each kind")
    parser.add_argument("--size", type=int, default=128, help="image size of the benchmark model")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "factory.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flawscope-factory-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model = work / "model"
        if (model / "deploy" / "manifest.json").is_file():  # --work given again: reuse its model
            data, bundle = model / "data", model / "deploy"
        else:
            data, bundle = build_model(model, args.size)
        results: dict[str, Any] = {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "load": os.getloadavg()[0],
        }
        if args.handshake:
            results["handshake"] = [
                bench_handshake(work, data, bundle, args.handshake, secure, sync, args.scan_ms)
                for secure, sync in ((False, "FULL"), (True, "FULL"), (False, "NORMAL"), (True, "NORMAL"))
            ]
        if args.overhead:
            results["overhead"] = bench_overhead(work, data, bundle, args.overhead, args.repeats)
        if args.soak:
            results["soak"] = bench_soak(work, data, bundle, args.soak, args.rate)
        results["load_end"] = os.getloadavg()[0]
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
