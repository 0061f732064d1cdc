"""MQTT against a real mosquitto broker on 127.0.0.1: QoS 1 after PUBACK, TLS, credentials, last will."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jsonschema
from factory_helpers import ArraySource, fake_loader
from factory_peers import Mosquitto, MqttCollector

from flawscope.config import load_config
from flawscope.integrate.payload import schema_path
from flawscope.station import Station

TOPIC = "acme/lyon/line-2/press-3/flawscope/result"
STATUS = "acme/lyon/line-2/press-3/flawscope/status"


def sink_table(port: int, *, password: str = Mosquitto.PASSWORD, tls: str = "") -> str:
    return textwrap.dedent(
        f"""\
        [sink.broker]
        type = "mqtt"
        port = {port}
        username = "{Mosquitto.USER}"
        password = "{password}"
        timeout_s = 2
        {tls}
        [sink.broker.delivery]
        retry_initial_s = 0.05
        retry_max_s = 0.3
        cursor_interval_s = 0.05
        """
    )


def run(config, n: int, rate: float = 0.0, drain_s: float = 15.0, on_status=None):
    with Station(config, inspector_loader=fake_loader, sources={"top": ArraySource(n, rate)}) as station:
        return station.run(drain_s=drain_s, on_status=on_status)


def test_results_arrive_in_order_on_the_isa95_topic_with_status(station_file, mosquitto: Mosquitto) -> None:
    collector = MqttCollector(mosquitto.port, client_id="t1")
    assert collector.subscribed.wait(10)
    config = station_file(sink_table(mosquitto.port))
    summary = run(config, 50)
    assert summary.cameras["top"].recorded == 50
    assert collector.wait_for(lambda c: len(c.results()) >= 50)
    assert collector.wait_for(
        lambda c: any(json.loads(p)["state"] == "offline" for t, p, _ in c.messages if t == STATUS)
    )
    collector.close()
    results = collector.results()
    assert [m["seq"] for m in results] == list(range(1, 51))
    schema = json.loads(schema_path().read_text())
    for message in results:
        jsonschema.validate(message, schema)
    assert {t for t, _, _ in collector.messages} == {TOPIC, STATUS}
    states = [json.loads(p)["state"] for t, p, _ in collector.messages if t == STATUS]
    assert states[0] == "online" and states[-1] == "offline"
    assert summary.status.sinks["broker"].delivered == 50


def test_tls_with_a_trusted_ca_and_credentials(station_file, mosquitto: Mosquitto, certs) -> None:
    collector = MqttCollector(mosquitto.port, client_id="t2")
    assert collector.subscribed.wait(10)
    config = station_file(sink_table(mosquitto.tls_port or 0, tls=f'tls = true\nca_file = "{certs.ca.cert}"'))
    summary = run(config, 10)
    assert collector.wait_for(lambda c: len(c.results()) >= 10)
    collector.close()
    assert summary.status.sinks["broker"].backlog == 0


def test_untrusted_certificate_and_refused_credentials_are_named_and_nothing_is_lost(
    station_file, mosquitto: Mosquitto, certs
) -> None:
    rogue = sink_table(mosquitto.tls_port or 0, tls=f'tls = true\nca_file = "{certs.rogue.cert}"')
    summary = run(station_file(rogue), 5, drain_s=1.0)
    status = summary.status.sinks["broker"]
    assert summary.cameras["top"].recorded == 5 and status.backlog == 5
    assert "sink broker: broker 127.0.0.1" in status.last_error
    assert "certificate is not trusted" in status.last_error

    wrong = sink_table(mosquitto.port, password="nope")
    summary = run(station_file(wrong), 5, drain_s=1.0)
    status = summary.status.sinks["broker"]
    assert (
        status.backlog == 10
        and "connection refused: not authorised (user name or password refused" in status.last_error
    )

    collector = MqttCollector(mosquitto.port, client_id="t3")
    assert collector.subscribed.wait(10)
    summary = run(station_file(sink_table(mosquitto.port)), 0)  # fixed: the backlog drains
    assert collector.wait_for(lambda c: len(c.results()) >= 10)
    collector.close()
    assert [m["seq"] for m in collector.results()] == list(range(1, 11))


def test_a_broker_outage_is_bridged_by_the_log(station_file, mosquitto: Mosquitto) -> None:
    collector = MqttCollector(mosquitto.port, client_id="t4")
    assert collector.subscribed.wait(10)
    config = station_file(sink_table(mosquitto.port))
    statuses = []

    def outage() -> None:
        time.sleep(0.5)
        mosquitto.stop()
        time.sleep(2.0)
        mosquitto.start()

    cut = threading.Thread(target=outage)
    cut.start()
    summary = run(config, 300, rate=100, drain_s=20, on_status=statuses.append)
    cut.join()
    assert summary.cameras["top"].recorded == 300
    assert max(s.sinks["broker"].backlog for s in statuses) > 50  # grew visibly during the outage
    assert any("sink broker" in s.sinks["broker"].last_error for s in statuses)
    assert collector.wait_for(lambda c: len({m["id"] for m in c.results()}) >= 300, timeout_s=30)
    collector.close()
    results = collector.results()
    ids_by_seq: dict[int, set[str]] = {}
    for message in results:
        ids_by_seq.setdefault(message["seq"], set()).add(message["id"])
    assert sorted(ids_by_seq) == list(range(1, 301))  # nothing lost
    assert all(len(ids) == 1 for ids in ids_by_seq.values())  # a duplicate has the same id
    first_seen = list(dict.fromkeys(m["seq"] for m in results))
    assert first_seen == sorted(first_seen)  # order kept


def test_the_last_will_says_offline_when_the_station_dies(
    tmp_path: Path, station_file, mosquitto: Mosquitto
) -> None:
    config = station_file(sink_table(mosquitto.port))
    collector = MqttCollector(mosquitto.port, topic=STATUS, client_id="t5")
    assert collector.subscribed.wait(10)
    script = textwrap.dedent(
        f"""
        import time
        from flawscope.config import load_config
        from flawscope.integrate.registry import SinkContext, make_sink
        config = load_config({str(config.path)!r})
        sink = make_sink(SinkContext(config, config.sink("broker")))
        sink.options = type(sink.options)(**{{**sink.options.__dict__, "keepalive_s": 5}})
        sink.open()
        print("open", flush=True)
        time.sleep(60)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "open"
        assert collector.wait_for(lambda c: any(json.loads(p)["state"] == "online" for _, p, _ in c.messages))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert collector.wait_for(lambda c: json.loads(c.messages[-1][1])["state"] == "offline", timeout_s=15)
    finally:
        if process.poll() is None:
            process.kill()
        collector.close()
    assert load_config(config.path).sink("broker").options.status_topic.endswith("/flawscope/status")
