"""``flawscope station check|run|status``, ``sink replay`` and ``plc-sim`` from the command line."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from factory_helpers import ArraySource, Background, fake_loader
from factory_peers import Mosquitto, MqttCollector, WebhookReceiver, free_port, wait_port

from flawscope.station import Station

SECRET = "whsec_" + base64.b64encode(b"cli-test-secret-of-32-bytes-ok!!").decode()


def flawscope(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flawscope.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch

    from flawscope.data.synthetic import SyntheticSpec, write_dataset
    from flawscope.decide.workflow import calibrate_bundle
    from flawscope.export.onnx_export import export_bundle
    from flawscope.models.train import train

    torch.set_num_threads(2)
    folder = tmp_path_factory.mktemp("station-cli")
    spec = SyntheticSpec(size=(64, 64), n_train=40, n_test_good=6, n_test_defect_per_type=2, seed=4)
    dataset = write_dataset(folder / "data", spec)
    result = train(dataset, folder / "trained", model="padim", holdout=0.25, params={"image_size": 64})
    calibrate_bundle(folder / "trained", result.holdout_images, target_frr=0.1)
    export_bundle(folder / "trained", folder / "deployed")
    return dataset.root, folder / "deployed"


def test_station_check_run_status_and_replay(deployed, tmp_path: Path, mosquitto: Mosquitto) -> None:
    data, bundle = deployed
    receiver = WebhookReceiver(base64.b64decode(SECRET[6:])).start()
    collector = MqttCollector(mosquitto.port, topic="acme/#", client_id="cli")
    assert collector.subscribed.wait(10)
    config = tmp_path / "station.toml"
    config.write_text(
        f"""
[station]
name = "press-3"
enterprise = "acme"
site = "lyon"
line = "line-2"
audit = "sqlite:///audit.db"

[[camera]]
name = "top"
source = "sim://{data}?rate=0&count=30&defect_ratio=0.3"
bundle = "{bundle}"

[sink.broker]
type = "mqtt"
port = {mosquitto.port}
username = "{Mosquitto.USER}"
password_env = "TEST_MQTT_PASSWORD"

[sink.mes]
type = "webhook"
url = "{receiver.url}"
secret_env = "TEST_MES_SECRET"
mode = "batch"
"""
    )
    env = {"TEST_MQTT_PASSWORD": Mosquitto.PASSWORD, "TEST_MES_SECRET": SECRET}
    try:
        missing = flawscope("station", "check", str(config))
        assert missing.returncode == 2
        assert (
            "sink.broker: environment variable TEST_MQTT_PASSWORD (the broker password) is not set"
            in missing.stderr
        )
        assert "sink.mes: environment variable TEST_MES_SECRET" in missing.stderr
        checked = flawscope("station", "check", str(config), env=env)
        assert checked.returncode == 0, checked.stderr
        assert "ok: station press-3, cameras top, sinks broker (mqtt), mes (webhook)" in checked.stdout

        ran = flawscope("station", "run", str(config), env=env)
        assert ran.returncode == 0, ran.stderr
        assert "Traceback" not in ran.stderr
        assert collector.wait_for(lambda c: len(c.results()) >= 30)
        assert [m["seq"] for m in receiver.delivered()] == list(range(1, 31))

        status = flawscope("station", "status", str(config), "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["running"] is False
        assert (
            report["sinks"]["broker"]["last_delivered_seq"] == 30
            and report["sinks"]["broker"]["backlog"] == 0
        )
        assert report["sinks"]["mes"]["dead_letters"] == 0

        replayed = flawscope("sink", "replay", "mes", "--from", "25", "--all", "-c", str(config), env=env)
        assert replayed.returncode == 0, replayed.stderr
        assert "sink mes: 6 record(s) re-sent, 0 refused again, 0 dead letter(s) left" in replayed.stdout
        assert [m["seq"] for m in receiver.delivered()][-6:] == list(range(25, 31))

        verified = flawscope("audit", "verify", "--audit", f"sqlite:///{tmp_path / 'audit.db'}")
        assert verified.returncode == 0 and "intact" in verified.stdout
    finally:
        receiver.stop()
        collector.close()


def test_plc_sim_command_against_a_station(station_file, tmp_path: Path) -> None:
    port = free_port()
    config = station_file(
        f"""
[sink.plc]
type = "opcua-server"
endpoint = "opc.tcp://127.0.0.1:{port}/flawscope"
security = ["None"]
allow_anonymous = true
handshake = "tags"
""",
        camera_extra='trigger = "plc"',
    )
    station = Station(config, inspector_loader=fake_loader, sources={"top": ArraySource(None)})
    running = Background(station.run, drain_s=5)
    try:
        wait_port(port, 60)
        out = tmp_path / "plc.json"
        sim = flawscope(
            "plc-sim",
            "--connect",
            f"opc.tcp://127.0.0.1:{port}/flawscope",
            "--parts",
            "12",
            "--json",
            str(out),
        )
        assert sim.returncode == 0, sim.stderr
        assert "trigger to result readable" in sim.stdout
    finally:
        station.stop()
        running.result(60)
        station.close()
    counts = json.loads(out.read_text())
    assert counts["triggered"] == 12 and counts["results"] == 12
    assert counts["missed"] == counts["duplicates"] == counts["out_of_order"] == 0
    assert counts["latency_ms"]["n"] == 12


def test_plc_sim_refuses_two_roles_at_once() -> None:
    both = flawscope("plc-sim", "--connect", "opc.tcp://127.0.0.1:1/x", "--serve", "opc.tcp://127.0.0.1:2/y")
    assert (
        both.returncode == 2 and "give either --connect URL" in both.stderr and "Traceback" not in both.stderr
    )


def test_two_cameras_in_one_station_keep_their_own_counters(station_file) -> None:
    config = station_file(cameras=("top", "side"))
    sources = {"top": ArraySource(25, prefix="t"), "side": ArraySource(40, prefix="s")}
    with Station(config, inspector_loader=fake_loader, sources=sources) as station:
        summary = station.run(drain_s=1)
    assert summary.cameras["top"].recorded == 25 and summary.cameras["side"].recorded == 40
    assert summary.cameras["top"].station == "press-3/top"
