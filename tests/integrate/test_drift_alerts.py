"""Drift alarms travel like results: an audit record of kind "drift", delivered by the station's sinks."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jsonschema
import pytest
from factory_peers import WebhookReceiver

from flawscope.integrate.payload import schema_path
from flawscope.integrate.webhook import decode_secret

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 64-px deployable bundle calibrated on 40 good parts (it carries a monitoring reference)."""
    import torch

    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("drift-alerts")
    spec = SyntheticSpec(size=(64, 64), n_train=100, n_test_good=10, n_test_defect_per_type=1, seed=8)
    dataset = write_dataset(folder / "data", spec)
    result = train(dataset, folder / "trained", model="padim", holdout=0.4, params={"image_size": 64})
    calibrate_bundle(folder / "trained", result.holdout_images, target_frr=0.05)
    export_bundle(folder / "trained", folder / "deployed")
    return folder / "deployed", Path(dataset.root)


def test_a_dimming_lamp_is_an_audited_drift_alarm_delivered_by_webhook(station_file, monitored) -> None:
    from flawscope.acquire import SimSource
    from flawscope.audit import AuditLog
    from flawscope.runtime import Inspector
    from flawscope.station import Station

    bundle, dataset = monitored
    sink = (
        f'[sink.mes]\ntype = "webhook"\nurl = "{{url}}"\nsecret = "{SECRET}"\ntimeout_s = 2\n'
        "[sink.mes.delivery]\nretry_initial_s = 0.05\nretry_max_s = 0.2\ncursor_interval_s = 0.05\n"
    )
    with WebhookReceiver(decode_secret(SECRET)) as receiver:
        config = station_file(sink.replace("{url}", receiver.url))
        source = SimSource(dataset, rate=0, defect_ratio=0.0, count=400, drift="dim:0.5:0:150")
        with Station(
            config, inspector_loader=lambda _c: Inspector.load(bundle), sources={"top": source}
        ) as station:
            summary = station.run(drain_s=20)
            status = station.status(running=False)
        delivered = receiver.delivered()
    assert summary.cameras["top"].recorded == 400
    drift = status.drift["top"]
    assert drift["level"] == "alarm"
    assert any(s["name"] == "brightness" and s["level"] == "alarm" for s in drift["stats"])
    with AuditLog.open(config.station.audit, read_only=True) as audit:
        records = [r for r in audit.records() if r.kind == "drift"]
        assert audit.verify().ok
    alarms = [r for r in records if r.outcome.value == "fail" and r.category == "brightness"]
    assert alarms and alarms[0].station == "press-3/top" and alarms[0].model_hash
    assert alarms[0].score < 0 and "lighting" in alarms[0].reason
    sent = [m for m in delivered if m["kind"] == "drift"]
    assert {m["seq"] for m in sent} == {r.seq for r in records}  # every drift record, delivered
    schema = json.loads(schema_path().read_text())
    for message in sent:
        jsonschema.validate(message, schema)
    assert any(m["category"] == "brightness" and m["outcome"] == "fail" for m in sent)


def test_a_drift_alarm_is_an_opc_ua_diagnostic_event(station_file, monitored) -> None:
    import asyncio

    from asyncua import Client, ua
    from factory_helpers import Background
    from factory_peers import free_port, wait_port

    from flawscope.acquire import SimSource
    from flawscope.integrate.opcua.vision import DIAGNOSTIC_INFO_EVENT_TYPE, MV_URI
    from flawscope.runtime import Inspector
    from flawscope.station import Station

    bundle, dataset = monitored
    port = free_port()
    sink = (
        f'[sink.plc]\ntype = "opcua-server"\nendpoint = "opc.tcp://127.0.0.1:{port}/flawscope"\n'
        'security = ["None"]\nallow_anonymous = true\nhandshake = "methods"\n'
        "[sink.plc.delivery]\nretry_initial_s = 0.05\nretry_max_s = 0.2\ncursor_interval_s = 0.05\n"
    )
    config = station_file(sink)
    # Slow enough for the client to subscribe before the lamp dims at part 250.
    source = SimSource(dataset, rate=40, defect_ratio=0.0, count=700, drift="dim:0.5:0:250")
    station = Station(config, inspector_loader=lambda _c: Inspector.load(bundle), sources={"top": source})
    running = Background(station.run, drain_s=10)
    try:
        wait_port(port, 60)

        async def listen() -> list:
            async with Client(f"opc.tcp://127.0.0.1:{port}/flawscope") as client:
                mv = await client.get_namespace_index(MV_URI)
                ns = await client.get_namespace_index("urn:flawscope:press-3")
                events: asyncio.Queue = asyncio.Queue()

                class Handler:
                    def event_notification(self, event) -> None:  # type: ignore[no-untyped-def]
                        events.put_nowait(event)

                subscription = await client.create_subscription(5, Handler())
                await subscription.subscribe_events(
                    client.get_node(ua.NodeId("top", ns)), ua.NodeId(DIAGNOSTIC_INFO_EVENT_TYPE, mv)
                )
                got = []
                while not any(e.Severity >= 700 and "brightness" in e.Message.Text for e in got):
                    got.append(await asyncio.wait_for(events.get(), 60))
                return got

        received = asyncio.run(asyncio.wait_for(listen(), 90))
    finally:
        station.stop()
        running.result(60)
        station.close()
    alarm = next(e for e in received if e.Severity >= 700 and "brightness" in e.Message.Text)
    assert "drift brightness" in alarm.Message.Text and "alarm" in alarm.Message.Text
