"""The OPC UA server (OPC 40100-1 Machine Vision) against asyncua clients and the PLC simulator."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import re
import time
from pathlib import Path

import pytest
from factory_helpers import ArraySource, Background, fake_loader, run_plcsim
from factory_peers import free_port, wait_port

from flawscope.integrate.opcua.vision import MV_URI, NODESET
from flawscope.integrate.plcsim import PlcSimOptions
from flawscope.station import Station

SHARED = Path(__file__).resolve().parents[3] / "shared" / "opcua"


def server_table(port: int, **extra: str) -> str:
    lines = [
        "[sink.plc]",
        'type = "opcua-server"',
        f'endpoint = "opc.tcp://127.0.0.1:{port}/flawscope"',
        'security = ["None"]',
        "allow_anonymous = true",
        *(f"{k} = {v}" for k, v in extra.items()),
        "[sink.plc.delivery]",
        "retry_initial_s = 0.05",
        "retry_max_s = 0.2",
        "cursor_interval_s = 0.05",
    ]
    return "\n".join(lines) + "\n"


def nodeset_ids() -> dict[str, int]:
    """BrowseName path -> NodeId number, from the NodeIds CSV the OPC Foundation publishes."""
    path = SHARED / "Opc.Ua.MachineVision.NodeIds.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found (the OPC Foundation NodeIds CSV lives in ../shared/opcua)")
    with path.open() as handle:
        return {row[0]: int(row[1]) for row in csv.reader(handle) if len(row) >= 2}


def client_run(coro_factory, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro_factory(), timeout_s))


def test_the_shipped_nodeset_is_the_official_one() -> None:
    official = SHARED / "Opc.Ua.MachineVision.NodeSet2.xml"
    if not official.is_file():
        pytest.skip(f"{official} not found")
    assert hashlib.sha256(NODESET.read_bytes()).digest() == hashlib.sha256(official.read_bytes()).digest()
    assert f"<Uri>{MV_URI}</Uri>" in NODESET.read_text()


def test_address_space_state_machine_and_result_management(station_file) -> None:
    """Browse names and NodeIds against the NodeSet; the state machine; results from the audit store."""
    from asyncua import Client, ua

    ids = nodeset_ids()
    port = free_port()
    config = station_file(server_table(port, handshake='"methods"'), camera_extra='trigger = "plc"')
    camera_source = ArraySource(None)
    station = Station(config, inspector_loader=fake_loader, sources={"top": camera_source})
    running = Background(station.run, drain_s=5)
    try:
        wait_port(port, 60)

        async def check() -> dict:
            async with Client(f"opc.tcp://127.0.0.1:{port}/flawscope") as client:
                await client.load_data_type_definitions()
                mv = await client.get_namespace_index(MV_URI)
                ns = await client.get_namespace_index("urn:flawscope:press-3")
                system = client.get_node(ua.NodeId("top", ns))
                type_definition = await system.read_type_definition()
                found = {"type": type_definition}
                children = {(await c.read_browse_name()).to_string() for c in await system.get_children()}
                found["children"] = children
                machine = client.get_node(ua.NodeId("top.VisionStateMachine", ns))
                auto = client.get_node(ua.NodeId("top.VisionStateMachine.AutomaticModeStateMachine", ns))
                state_id = client.get_node(ua.NodeId("top.VisionStateMachine.CurrentState.Id", ns))
                auto_id = client.get_node(
                    ua.NodeId("top.VisionStateMachine.AutomaticModeStateMachine.CurrentState.Id", ns)
                )
                found["state"] = (await state_id.read_value(), await auto_id.read_value())
                methods = {}
                for parent in (machine, auto, client.get_node(ua.NodeId("top.ResultManagement", ns))):
                    for child in await parent.get_children(refs=ua.ObjectIds.HasComponent):
                        if await child.read_node_class() == ua.NodeClass.Method:
                            methods[(await child.read_browse_name()).Name] = await child.read_browse_name()
                found["methods"] = methods
                start = client.get_node(
                    ua.NodeId("top.VisionStateMachine.AutomaticModeStateMachine.StartSingleJob", ns)
                )
                args = await (await start.get_child("0:InputArguments")).read_value()
                found["start_args"] = [(a.Name, a.DataType) for a in args]
                # Halt refuses jobs; Reset brings the machine back to Ready.
                await machine.call_method(
                    client.get_node(ua.NodeId("top.VisionStateMachine.Halt", ns)), 0, ua.LocalizedText("")
                )
                found["halted"] = await state_id.read_value()
                with pytest.raises(ua.UaStatusCodeError) as refused:
                    await auto.call_method(
                        start,
                        ua.MeasIdDataType(Id="m"),
                        ua.PartIdDataType(Id="x"),
                        ua.RecipeIdExternalDataType(Id="r"),
                        ua.ProductIdDataType(Id="p"),
                        ua.Variant([], ua.VariantType.Variant),
                    )
                found["refused"] = refused.value.code
                await machine.call_method(
                    client.get_node(ua.NodeId("top.VisionStateMachine.Reset", ns)), 0, ua.LocalizedText("")
                )
                found["reset"] = await auto_id.read_value()
                # One job: its ResultReady event, then GetResultById and GetResultListFiltered.
                events: asyncio.Queue = asyncio.Queue()

                class Handler:
                    def event_notification(self, event) -> None:  # type: ignore[no-untyped-def]
                        events.put_nowait(event)

                subscription = await client.create_subscription(5, Handler())
                await subscription.subscribe_events(system, ua.NodeId(ids["ResultReadyEventType"], mv))
                job = await auto.call_method(
                    start,
                    ua.MeasIdDataType(Id="M-1"),
                    ua.PartIdDataType(Id="PART-1"),
                    ua.RecipeIdExternalDataType(Id="R-7"),
                    ua.ProductIdDataType(Id="P-2"),
                    ua.Variant([], ua.VariantType.Variant),
                )
                event = await asyncio.wait_for(events.get(), 20)
                found["job"], found["event"] = job[0].Id, event
                manager = client.get_node(ua.NodeId("top.ResultManagement", ns))
                by_id = await manager.call_method(
                    client.get_node(ua.NodeId("top.ResultManagement.GetResultById", ns)),
                    ua.ResultIdDataType(Id=event.ResultId.Id),
                    ua.Variant(1000, ua.VariantType.Int32),
                )
                found["by_id"] = by_id[1]
                listed = await manager.call_method(
                    client.get_node(ua.NodeId("top.ResultManagement.GetResultListFiltered", ns)),
                    ua.Variant(0, ua.VariantType.Int32),
                    *[ua.Variant(None, ua.VariantType.ExtensionObject)] * 7,
                    ua.JobIdDataType(Id=job[0].Id),
                    ua.Variant(0, ua.VariantType.UInt32),
                    ua.Variant(0, ua.VariantType.UInt32),
                    ua.Variant(0, ua.VariantType.Int32),
                )
                found["listed"] = listed
                with pytest.raises(ua.UaStatusCodeError) as missing:
                    await manager.call_method(
                        client.get_node(ua.NodeId("top.ResultManagement.GetResultById", ns)),
                        ua.ResultIdDataType(Id="999-0123456789abcdef"),
                        ua.Variant(0, ua.VariantType.Int32),
                    )
                found["missing"] = missing.value.code
                found["after"] = await auto_id.read_value()
                # The camera goes down: Error; it comes back: Operational again.
                camera_source.connected, camera_source.last_error = False, "cable pulled"
                await asyncio.sleep(1.5)
                found["error"] = await state_id.read_value()
                camera_source.connected = True
                await asyncio.sleep(1.5)
                found["recovered"] = await state_id.read_value()
                found["mv"] = mv
                return found

        found = client_run(check)
    finally:
        station.stop()
        running.result(60)
        station.close()
    mv = found["mv"]

    assert found["type"] == ua.NodeId(ids["VisionSystemType"], mv)
    for name in ("VisionStateMachine", "ResultManagement"):
        assert f"ns={mv};{name}" in {c.replace(f"{mv}:", f"ns={mv};") for c in found["children"]}, found[
            "children"
        ]
    assert found["state"] == (
        ua.NodeId(ids["VisionStateMachineType_Operational"], mv),
        ua.NodeId(ids["VisionAutomaticModeStateMachineType_Ready"], mv),
    )
    expected = {
        "Halt",
        "Reset",
        "SelectModeAutomatic",
        "StartSingleJob",
        "StartContinuous",
        "Stop",
        "Abort",
        "GetResultById",
        "GetResultComponentsById",
        "GetResultListFiltered",
    }
    assert expected <= set(found["methods"]) and all(
        b.NamespaceIndex == mv for b in found["methods"].values()
    )
    assert [n for n, _ in found["start_args"]] == ["MeasId", "PartId", "RecipeId", "ProductId", "Parameters"]
    assert found["start_args"][1][1] == ua.NodeId(ids["PartIdDataType"], mv)
    assert found["halted"] == ua.NodeId(ids["VisionStateMachineType_Halted"], mv)
    assert found["refused"] == ua.StatusCodes.BadInvalidState
    assert found["reset"] == ua.NodeId(ids["VisionAutomaticModeStateMachineType_Ready"], mv)
    event = found["event"]
    assert event.PartId.Id == "PART-1" and event.MeasId.Id == "M-1" and event.JobId.Id == found["job"]
    assert event.ExternalRecipeId.Id == "R-7" and event.ProductId.Id == "P-2" and event.ResultState == 1
    assert re.fullmatch(r"1-[0-9a-f]{16}", event.ResultId.Id)
    content = {
        kv.Key.Name: kv.Value.Value
        for kv in (v.Value if hasattr(v, "Value") else v for v in event.ResultContent)
    }
    assert content["Outcome"] in ("pass", "fail") and content["ModelVersion"] == "fake.t3"
    assert content["ThresholdVersion"] == 3 and content["Seq"] == 1
    assert found["by_id"].ResultId.Id == event.ResultId.Id and found["by_id"].InternalRecipeId.Id == "fake.t3"
    is_complete, count, _handle, results = found["listed"][:4]
    assert is_complete and count == 1 and results[0].PartId.Id == "PART-1"
    assert found["missing"] == ua.StatusCodes.BadNotFound
    assert found["after"] == ua.NodeId(
        ids["VisionAutomaticModeStateMachineType_Ready"], mv
    )  # SingleExecution done
    assert found["error"] == ua.NodeId(ids["VisionStateMachineType_Error"], mv)
    assert found["recovered"] == ua.NodeId(ids["VisionStateMachineType_Operational"], mv)


def test_tag_handshake_triggers_and_holds_results_until_acknowledged(station_file) -> None:
    port = free_port()
    config = station_file(
        server_table(port, handshake='"tags"', ack_timeout_s="0.3", buffer_depth="3"),
        camera_extra='trigger = "plc"',
    )
    statuses = []
    station = Station(config, inspector_loader=fake_loader, sources={"top": ArraySource(None)})
    running = Background(station.run, drain_s=10, on_status=statuses.append)
    try:
        wait_port(port, 60)
        endpoint = f"opc.tcp://127.0.0.1:{port}/flawscope"
        # A PLC that triggers a part but never acknowledges its result: the result is held.
        _, bg = run_plcsim(PlcSimOptions(endpoint, parts=1, prefix="first", ack=False, deadline_ms=2000))
        stats = bg.result(60)
        assert stats.triggered == 1 and stats.results == 1  # readable, not acknowledged
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (statuses and statuses[-1].sinks["plc"].failures):
            time.sleep(0.1)
        problem = statuses[-1].sinks["plc"].last_error
        assert problem.startswith("sink plc: camera top: result 1 not acknowledged within 0.3 s"), problem
        # The PLC comes back: it acknowledges the held result and triggers 20 more, one at a time.
        _, bg = run_plcsim(PlcSimOptions(endpoint, parts=20, prefix="part", deadline_ms=5000))
        stats = bg.result(120)
    finally:
        station.stop()
        summary = running.result(60)
        station.close()
    assert stats.triggered == 20 and stats.missed == 0 and stats.out_of_order == 0
    assert stats.results >= 20 and len(stats.latencies_ms) == 20
    assert summary.cameras["top"].recorded == 21
    plc = summary.status.sinks["plc"]
    assert plc.backlog == 0 and plc.delivered == 21
    handshake = plc.details["cameras"]["top"]["handshake"]
    assert handshake["triggers"] == 21 and handshake["acknowledged"]


def test_plc_sim_in_method_mode_starts_single_jobs_and_takes_result_events(station_file) -> None:
    port = free_port()
    config = station_file(server_table(port, handshake='"methods"'), camera_extra='trigger = "plc"')
    station = Station(config, inspector_loader=fake_loader, sources={"top": ArraySource(None)})
    running = Background(station.run, drain_s=10)
    try:
        wait_port(port, 60)
        endpoint = f"opc.tcp://127.0.0.1:{port}/flawscope"
        _, bg = run_plcsim(PlcSimOptions(endpoint, mode="methods", parts=6, prefix="m", deadline_ms=5000))
        stats = bg.result(120)
    finally:
        station.stop()
        summary = running.result(60)
        station.close()
    assert stats.triggered == 6 and stats.results == 6 and stats.missed == 0 and stats.duplicates == 0
    assert stats.out_of_order == 0 and stats.reconnects == 0 and len(stats.latencies_ms) == 6
    assert summary.cameras["top"].recorded == 6


def test_sign_and_encrypt_with_certificates_trust_store_and_users(
    station_file, tmp_path: Path, monkeypatch, caplog
) -> None:
    import datetime as dt
    import logging

    from flawscope.integrate.certs import make_certificate

    caplog.set_level(logging.WARNING, logger="flawscope")

    port = free_port()
    server_uri, client_uri = "urn:acme:press-3:flawscope", "urn:acme:plc-sim"
    pki = tmp_path / "pki"
    server = make_certificate(
        pki / "own", "server", common_name="press-3", application_uri=server_uri, der=True
    )
    client = make_certificate(pki / "plc", "plc", common_name="plc", application_uri=client_uri, der=True)
    rogue = make_certificate(
        pki / "rogue", "rogue", common_name="rogue", application_uri=client_uri, der=True
    )
    expired = make_certificate(
        pki / "old",
        "old",
        common_name="old-plc",
        application_uri=client_uri,
        der=True,
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        days=30,
    )
    (pki / "trusted").mkdir()
    (pki / "trusted" / "plc.der").write_bytes(client.cert.read_bytes())
    (pki / "trusted" / "old.der").write_bytes(expired.cert.read_bytes())  # trusted, but expired
    (pki / "station-trust").mkdir()
    (pki / "station-trust" / "server.der").write_bytes(server.cert.read_bytes())
    monkeypatch.setenv("PLC_PASSWORD", "s3cret-plc")
    table = f"""
[sink.plc]
type = "opcua-server"
endpoint = "opc.tcp://127.0.0.1:{port}/flawscope"
application_uri = "{server_uri}"
security = ["Basic256Sha256_SignAndEncrypt"]
certificate = "{server.cert}"
private_key = "{server.key}"
trust_store = "{pki / "trusted"}"
users = {{ plc = "PLC_PASSWORD" }}
handshake = "tags"
"""
    config = station_file(table)
    from flawscope.station import check_station

    problems = [p.message for p in check_station(config.path)[1] if p.where.startswith("sink")]
    assert problems == [f"the trusted certificate {pki / 'trusted' / 'old.der'} expired on 2020-01-31"]
    station = Station(config, inspector_loader=fake_loader, sources={"top": ArraySource(None, rate=50)})
    running = Background(station.run, drain_s=5)
    try:
        wait_port(port, 60)
        base = dict(
            endpoint=f"opc.tcp://127.0.0.1:{port}/flawscope",
            security="Basic256Sha256_SignAndEncrypt",
            trust_store=pki / "station-trust",
            application_uri=client_uri,
            deadline_ms=5000,
        )
        good = PlcSimOptions(
            **base, certificate=client.cert, private_key=client.key, username="plc", password="s3cret-plc"
        )
        # The PLC connects once more results wait than the buffer holds (ResultOverrun, checked below).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and station.status().sinks["plc"].backlog <= 9:
            time.sleep(0.05)
        results = _take_results(good, 10)
        assert len(results) >= 10  # encrypted session, results flowing
        users = station.forwarders[0].sink.users
        for bad, refusals in (
            (
                PlcSimOptions(
                    **base, certificate=client.cert, private_key=client.key, username="plc", password="wrong"
                ),
                lambda: users.refused,
            ),
            (
                PlcSimOptions(
                    **base,
                    certificate=rogue.cert,
                    private_key=rogue.key,
                    username="plc",
                    password="s3cret-plc",
                ),
                lambda: users.refused_certificates,
            ),
            (
                PlcSimOptions(
                    **base,
                    certificate=expired.cert,
                    private_key=expired.key,
                    username="plc",
                    password="s3cret-plc",
                ),
                lambda: users.refused_certificates,
            ),
            (PlcSimOptions(**{**base, "security": "None"}), None),
        ):
            # Until the station refused it (a loaded machine may take seconds to get that far).
            before = refusals() if refusals is not None else 0
            refused = (lambda f=refusals, b=before: f() > b) if refusals is not None else None
            assert _take_results(bad, 1, timeout_s=4 if refused is None else 60, until=refused) == [], bad
            assert refused is None or refused(), bad
    finally:
        station.stop()
        summary = running.result(60)
        station.close()
    assert station.forwarders[0].sink.users.refused >= 1  # the wrong password was seen and refused
    # Each refusal is one line naming the sink, the peer and why (the line kept inspecting meanwhile).
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sink plc: OPC UA")]
    assert "sink plc: OPC UA login refused for user 'plc' (wrong password)" in lines
    untrusted = (
        f"sink plc: OPC UA session refused: the certificate of {client_uri} (O=flawscope,CN=rogue) is not in"
    )
    assert any(line.startswith(untrusted) for line in lines), lines
    old = f"sink plc: OPC UA session refused: the certificate of {client_uri} (O=flawscope,CN=old-plc) has"
    old += " expired"
    assert any(line.startswith(old) for line in lines), lines
    assert summary.cameras["top"].recorded > 10
    # More than buffer_depth (8) results waited for the PLC while it connected: overrun was flagged.
    assert summary.status.sinks["plc"].details["cameras"]["top"]["handshake"]["overrun"]


def _take_results(options: PlcSimOptions, n: int, timeout_s: float = 30, until=None) -> list:  # type: ignore[no-untyped-def]
    sim, bg = run_plcsim(options)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and sim.stats.results < n and not (until is not None and until()):
        time.sleep(0.05)
    sim.stop_threadsafe()
    bg.result(30)
    return sorted(sim.seen)


def test_an_expired_or_foreign_certificate_is_named_by_station_check(station_file, tmp_path: Path) -> None:
    import datetime as dt

    from flawscope.integrate.certs import make_certificate
    from flawscope.station import check_station

    old = make_certificate(
        tmp_path,
        "old",
        common_name="x",
        application_uri="urn:x",
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        days=30,
    )
    (tmp_path / "trust").mkdir()
    port = free_port()
    config = station_file(
        f"""
[sink.plc]
type = "opcua-server"
endpoint = "opc.tcp://127.0.0.1:{port}/x"
application_uri = "urn:acme:other"
certificate = "{old.cert}"
private_key = "{old.key}"
trust_store = "{tmp_path / "trust"}"
users = {{ plc = "UNSET_PASSWORD_VARIABLE" }}
"""
    )
    _, problems = check_station(config.path)
    text = "\n".join(p.render(config.path) for p in problems)
    assert "sink.plc: the application certificate" in text and "expired on 2020-01-31" in text
    assert "does not hold the application URI 'urn:acme:other'" in text
    assert "UNSET_PASSWORD_VARIABLE (password of user plc) is not set" in text
    assert all(p.line is not None for p in problems if p.where.startswith("sink."))


def test_client_mode_writes_into_the_plcs_own_server(station_file) -> None:
    plc_port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{plc_port}/plc"
    sim, plc = run_plcsim(PlcSimOptions(endpoint, mode="serve", parts=15, prefix="c", deadline_ms=5000))
    wait_port(plc_port, 60)
    nodes = ", ".join(
        f'{t} = "ns=2;s=PLC.{t}"'
        for t in (
            "Trigger",
            "TriggerPartId",
            "TriggerAck",
            "Busy",
            "ResultReady",
            "ResultAck",
            "ResultId",
            "ResultSeq",
            "ResultPartId",
            "OutcomeCode",
            "Accept",
            "Score",
        )
    )
    table = f"""
[sink.plc]
type = "opcua-client"
endpoint = "{endpoint}"
security = "None"
nodes = {{ {nodes} }}
[sink.plc.delivery]
retry_initial_s = 0.05
retry_max_s = 0.2
"""
    config = station_file(table, camera_extra='trigger = "plc"')
    station = Station(config, inspector_loader=fake_loader, sources={"top": ArraySource(None)})
    running = Background(station.run, drain_s=5)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            sim.stats.results < 15 or station.status().sinks["plc"].backlog
        ):
            time.sleep(0.1)
    finally:
        sim.stop_threadsafe()
        stats = plc.result(60)
        station.stop()
        summary = running.result(60)
        station.close()
    assert stats.triggered == 15 and stats.missed == 0 and stats.duplicates == 0 and stats.results == 15
    assert summary.cameras["top"].recorded == 15 and summary.status.sinks["plc"].backlog == 0


def test_client_mode_names_a_wrong_node_and_a_wrong_type(station_file) -> None:
    plc_port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{plc_port}/plc"
    sim, plc = run_plcsim(PlcSimOptions(endpoint, mode="serve"))
    wait_port(plc_port, 60)
    wrong = (
        'ResultReady = "ns=2;s=PLC.ResultReady", ResultAck = "ns=2;s=PLC.Nope", '
        'ResultId = "ns=2;s=PLC.ResultId", OutcomeCode = "ns=2;s=PLC.Score"'
    )
    try:
        config = station_file(
            f"""
[sink.plc]
type = "opcua-client"
endpoint = "{endpoint}"
security = "None"
nodes = {{ {wrong} }}
"""
        )
        from flawscope.station import check_station

        _, problems = check_station(config.path)
        # Run anyway: the line inspects, the sink says what is wrong and its backlog grows.
        with Station(config, inspector_loader=fake_loader, sources={"top": ArraySource(5)}) as station:
            summary = station.run(drain_s=1.0)
    finally:
        sim.stop_threadsafe()
        plc.result(30)
    text = "\n".join(p.message for p in problems)
    assert "tag ResultAck: node ns=2;s=PLC.Nope:" in text and "BadNodeIdUnknown" in text
    assert "tag OutcomeCode: node ns=2;s=PLC.Score is Double, expected Int32" in text
    status = summary.status.sinks["plc"]
    assert summary.cameras["top"].recorded == 5 and status.backlog == 5 and not status.connected
    assert status.last_error.startswith(f"sink plc: PLC {endpoint}: tag ResultAck: node ns=2;s=PLC.Nope")
    assert "tag OutcomeCode: node ns=2;s=PLC.Score is Double, expected Int32" in status.last_error
