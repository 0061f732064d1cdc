"""The short soak: every peer cut and restarted, the station SIGKILLed mid-delivery and restarted.

0 results lost at each peer (MQTT broker, webhook receiver, PLC over the OPC UA tag handshake),
order kept, duplicates only with the same id. ``benchmarks/factory.py`` runs the long version
(2,000 parts, 10-30 s outages, two kills) with a real model.
"""

from __future__ import annotations

import base64
import itertools
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from factory_helpers import run_plcsim, write_station
from factory_peers import Mosquitto, MqttCollector, WebhookReceiver, free_port

from flawscope.integrate.plcsim import PlcSimOptions

CHILD = str(Path(__file__).with_name("station_child.py"))
SECRET = "whsec_" + base64.b64encode(b"soak-test-secret-of-32-bytes-ok!").decode()
TOTAL, RATE = 240, 30.0


def committed(db: Path) -> dict[int, str]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("select seq, record_hash from inspections").fetchall()
    except sqlite3.OperationalError as exc:
        # The station has created the file but not yet committed its tables (WAL: not visible yet).
        if "no such table" in str(exc):
            return {}
        raise
    return {seq: f"{seq}-{digest[:16]}" for seq, digest in rows}


def verdict(expected: dict[int, str], received: list[tuple[int, str]]) -> dict[str, object]:
    ids: dict[int, set[str]] = {}
    first: list[int] = []
    for seq, rid in received:
        if seq not in ids:
            first.append(seq)
        ids.setdefault(seq, set()).add(rid)
    return {
        "lost": sorted(set(expected) - set(ids)),
        "other_id": [s for s, found in ids.items() if found != {expected.get(s)}],
        "inversions": sum(1 for a, b in itertools.pairwise(first) if b < a),
    }


def test_every_peer_gets_every_result_through_outages_and_a_station_kill(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    receiver = WebhookReceiver(base64.b64decode(SECRET[6:])).start()
    collector = MqttCollector(mosquitto.port, topic="acme/#", client_id="soak")
    assert collector.subscribed.wait(10)
    port = free_port()
    sinks = f"""
[delivery]
retry_initial_s = 0.05
retry_max_s = 0.5
cursor_interval_s = 0.2

[sink.broker]
type = "mqtt"
port = {mosquitto.port}
username = "{Mosquitto.USER}"
password = "{Mosquitto.PASSWORD}"
timeout_s = 2

[sink.mes]
type = "webhook"
url = "{receiver.url}"
secret = "{SECRET}"
mode = "batch"
batch_size = 10
timeout_s = 1

[sink.plc]
type = "opcua-server"
endpoint = "opc.tcp://127.0.0.1:{port}/flawscope"
security = ["None"]
allow_anonymous = true
handshake = "tags"
ack_timeout_s = 1
"""
    config = write_station(tmp_path / "station", sinks)
    db = tmp_path / "station" / "audit.db"
    record = tmp_path / "plc.jsonl"
    plc_options = PlcSimOptions(f"opc.tcp://127.0.0.1:{port}/flawscope", record=record)
    log = (tmp_path / "station.log").open("ab")

    def start_station() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, CHILD, str(config), str(TOTAL), str(RATE)], stdout=log, stderr=log
        )

    def wait_records(n: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while len(committed(db)) < n and time.monotonic() < deadline:
            time.sleep(0.1)

    def outage(stop, start, seconds: float) -> None:  # type: ignore[no-untyped-def]
        stop()
        time.sleep(seconds)
        start()

    station = start_station()
    sim, plc = run_plcsim(plc_options)
    try:
        wait_records(30)
        cuts = [threading.Thread(target=outage, args=(mosquitto.stop, mosquitto.start, 3.0))]
        cuts[0].start()
        wait_records(70)
        station.send_signal(signal.SIGKILL)  # mid-delivery: the broker is down, the others deliver
        station.wait()
        station = start_station()
        wait_records(110)
        cuts.append(threading.Thread(target=outage, args=(receiver.stop, receiver.start, 3.0)))
        cuts[-1].start()
        wait_records(150)
        sim.stop_threadsafe()
        plc.result(30)
        time.sleep(3.0)  # the PLC is away
        sim, plc = run_plcsim(plc_options)
        for cut in cuts:
            cut.join()
        assert station.wait(180) == 0
        time.sleep(2.0)
    finally:
        if station.poll() is None:
            station.kill()
        sim.stop_threadsafe()
        plc.result(30)
        receiver.stop()
        collector.close()
        log.close()
    expected = committed(db)
    parts = {p for (p,) in sqlite3.connect(db).execute("select part_id from inspections")}
    assert len(parts) == TOTAL  # every part recorded (a part in flight at the kill is inspected again)
    peers = {
        "mqtt": [(m["seq"], m["id"]) for m in collector.results()],
        "webhook": [(m["seq"], m["id"]) for m in receiver.delivered()],
        "plc": [(r["seq"], r["id"]) for r in map(json.loads, record.read_text().splitlines())],
    }
    for name, received in peers.items():
        assert verdict(expected, received) == {"lost": [], "other_id": [], "inversions": 0}, name
    assert receiver.bad_signatures == 0
