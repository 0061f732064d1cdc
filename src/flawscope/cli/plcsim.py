"""``flawscope plc-sim``: act as the PLC over OPC UA (tag handshake or Machine Vision methods)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from flawscope.cli.common import console
from flawscope.cli.render import kv_table
from flawscope.errors import InputError


def plcsim_command(
    connect: Annotated[
        str | None, typer.Option(help="The station's OPC UA endpoint (tags or methods mode).")
    ] = None,
    serve: Annotated[
        str | None,
        typer.Option(help="Be the PLC's own OPC UA server here (for a station sink in client mode)."),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="'tags' (handshake) or 'methods' (StartSingleJob + events).")
    ] = "tags",
    camera: Annotated[str, typer.Option(help="The camera (VisionSystem) to talk to.")] = "top",
    parts: Annotated[int, typer.Option(help="Parts to trigger (0 with --rate 0: only take results).")] = 0,
    rate: Annotated[
        float, typer.Option(help="Triggers per second (0: as soon as the last result is in).")
    ] = 0.0,
    prefix: Annotated[str, typer.Option(help="Part ids are PREFIX-N.")] = "plc",
    scan_ms: Annotated[
        float, typer.Option(help="Tag scan period (a PLC cycle), ms; 0: told of each change at once.")
    ] = 1.0,
    poll: Annotated[
        bool, typer.Option("--poll", help="Read the tags every scan (default: subscribe to their changes).")
    ] = False,
    deadline_ms: Annotated[
        float, typer.Option(help="A result later than this after its trigger is late.")
    ] = 1000.0,
    no_ack: Annotated[
        bool, typer.Option("--no-ack", help="Never acknowledge results (a stuck PLC).")
    ] = False,
    security: Annotated[
        str, typer.Option(help="None, Basic256Sha256_Sign or Basic256Sha256_SignAndEncrypt.")
    ] = "None",
    cert: Annotated[Path | None, typer.Option(help="The simulator's certificate.")] = None,
    key: Annotated[Path | None, typer.Option(help="Its private key.")] = None,
    trust: Annotated[Path | None, typer.Option(help="Folder of trusted server certificates.")] = None,
    user: Annotated[str, typer.Option(help="User name.")] = "",
    password_env: Annotated[str, typer.Option(help="Environment variable with the password.")] = "",
    application_uri: Annotated[
        str, typer.Option(help="The simulator's application URI.")
    ] = "urn:flawscope:plc-sim",
    record: Annotated[
        Path | None, typer.Option(help="Append every result received to this JSON-lines file.")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the counts and latencies here.")
    ] = None,
) -> None:
    """Trigger parts and take results as a PLC would; count missed, late and duplicated results."""
    import asyncio
    import signal

    from flawscope.integrate.plcsim import PlcSim, PlcSimOptions

    if (connect is None) == (serve is None):
        raise InputError("plc-sim", "give either --connect URL (tags/methods) or --serve URL")
    if connect is not None and mode not in ("tags", "methods"):
        raise InputError("--mode", f"must be 'tags' or 'methods', got {mode!r}")
    options = PlcSimOptions(
        endpoint=connect or serve or "",
        mode="serve" if serve else mode,
        camera=camera,
        parts=parts,
        rate=rate,
        prefix=prefix,
        scan_ms=scan_ms,
        poll=poll,
        deadline_ms=deadline_ms,
        ack=not no_ack,
        security=security,
        certificate=cert,
        private_key=key,
        trust_store=trust,
        username=user,
        password=os.environ.get(password_env, "") if password_env else "",
        application_uri=application_uri,
        record=record,
    )
    sim = PlcSim(options)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, sim.stop)
        await sim.run()

    asyncio.run(main())
    summary = sim.stats.to_dict()
    if json_out is not None:
        json_out.write_text(json.dumps(summary, indent=1))
    table = kv_table(f"PLC simulator ({options.mode}, {escape(options.endpoint)})")
    for name in ("triggered", "results", "missed", "late", "duplicates", "out_of_order", "reconnects"):
        table.add_row(name.replace("_", " "), str(summary[name]))
    lat = summary["latency_ms"]
    if lat["n"]:
        table.add_row(
            "trigger to result readable", f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms (n={lat['n']})"
        )
    console.print(table)
