"""``flawscope station run|check|status`` and ``flawscope sink replay``: a station from its TOML file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from flawscope.cli.common import console, err_console
from flawscope.errors import FlawscopeError

station_app = typer.Typer(
    help="Run a station from its station.toml: cameras, audit store, sinks.", no_args_is_help=True
)
sink_app = typer.Typer(help="Work on a station's sinks (delivery targets).", no_args_is_help=True)

ConfigArg = Annotated[Path, typer.Argument(help="The station's station.toml.")]


def _sink_rows(table: Table, sinks: dict[str, Any]) -> None:
    for name, s in sinks.items():
        state = "[green]connected[/green]" if s.get("connected") else escape(str(s.get("state", "?")))
        table.add_row(
            escape(name),
            escape(str(s.get("type", ""))),
            state,
            str(s.get("backlog", "?")),
            str(s.get("last_delivered_seq", "?")),
            str(s.get("dead_letters", 0)),
            escape(str(s.get("last_error") or "")),
        )


def _sinks_table(title: str) -> Table:
    table = Table(title=title)
    for column in ("sink", "type", "state", "backlog", "delivered up to seq", "dead letters", "last error"):
        table.add_column(column, overflow="fold")
    return table


@station_app.command("check")
def check_command(
    config: ConfigArg,
    offline: Annotated[bool, typer.Option(help="Do not connect to the sinks' peers.")] = False,
) -> None:
    """Check the file and what it names (bundles, sources, peers, certificates): every problem at once."""
    from flawscope.station import check_station

    loaded, problems = check_station(config, reach_peers=not offline)
    for problem in problems:
        err_console.print(
            f"[red]error:[/red] {escape(problem.render(config))}", soft_wrap=True, highlight=False
        )
    if problems:
        err_console.print(f"{len(problems)} problem(s) in {escape(str(config))}")
        raise typer.Exit(2)
    assert loaded is not None
    sinks = ", ".join(f"{s.name} ({s.type})" for s in loaded.sinks) or "none"
    console.print(
        f"[green]ok[/green]: station {escape(loaded.station.name)}, cameras "
        f"{escape(', '.join(c.name for c in loaded.cameras))}, sinks {escape(sinks)}",
        soft_wrap=True,
    )


@station_app.command("run")
def run_command(
    config: ConfigArg,
    drain_timeout: Annotated[
        float, typer.Option(help="Seconds the sinks may take to deliver what is committed, once stopped.")
    ] = 10.0,
) -> None:
    """Run the station until its sources end or Ctrl-C / SIGTERM (parts in flight are finished)."""
    import signal

    from rich.live import Live

    from flawscope.config import load_config
    from flawscope.station import Station

    loaded = load_config(config)
    station = Station(loaded)

    def request_stop(signum: int, _frame: object) -> None:
        err_console.print(f"[yellow]{signal.Signals(signum).name}: finishing the parts in flight...[/yellow]")
        station.stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    with station, Live(console=err_console, transient=True) as live:
        summary = station.run(drain_s=drain_timeout, on_status=lambda s: live.update(_live_line(station, s)))
    table = Table(title=f"Station {loaded.station.name}")
    for column in ("camera", "recorded", "pass", "rejected", "dropped", "missed", "parts/s", "stop reason"):
        table.add_column(column)
    for name, s in summary.cameras.items():
        table.add_row(
            escape(name),
            str(s.recorded),
            str(s.counts.get("pass", 0)),
            str(s.rejected),
            str(s.dropped),
            str(s.missed),
            f"{s.throughput:.1f}",
            escape(s.stop_reason),
        )
    console.print(table)
    sinks = _sinks_table("Sinks")
    _sink_rows(sinks, {n: s.__dict__ for n, s in summary.status.sinks.items()})
    console.print(sinks)
    if summary.errors:
        for name, error in summary.errors.items():
            err_console.print(f"[red]camera {escape(name)}:[/red] {escape(error)}", soft_wrap=True)
        raise typer.Exit(2)


def _live_line(station: Any, status: Any) -> str:
    from flawscope.station import status_line

    web = f"  web app: {station.web.url}" if station.web is not None else ""
    return escape(status_line(status) + web)


@station_app.command("status")
def status_command(
    config: ConfigArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Cameras and sinks of a station: live counters when it runs, delivery state from the audit store."""
    from flawscope.config import load_config
    from flawscope.station.status import is_live, read_status

    loaded = load_config(config)
    data = read_status(loaded.status_path) or {}
    live = bool(data) and is_live(data, loaded.station.status_interval_s)
    stored = _stored_sink_state(loaded)
    sinks: dict[str, Any] = {}
    for sink in loaded.sinks:
        entry: dict[str, Any] = {"type": sink.type, "state": "stopped", "connected": False}
        entry.update(stored.get(sink.name, {}))
        if live and sink.name in data.get("sinks", {}):
            running = data["sinks"][sink.name]
            entry.update(
                {k: running[k] for k in ("state", "connected", "last_error", "details") if k in running}
            )
        sinks[sink.name] = entry
    report = {
        "station": loaded.station.name,
        "running": live,
        "pid": data.get("pid") if live else None,
        "cameras": data.get("cameras", {}) if live else {},
        "sources": data.get("sources", {}) if live else {},
        "sinks": sinks,
    }
    if as_json:
        console.print_json(json.dumps(report))
        return
    state = f"[green]running[/green] (pid {report['pid']})" if live else "[yellow]not running[/yellow]"
    console.print(f"station {escape(loaded.station.name)}: {state}")
    if live:
        table = Table(title="Cameras")
        for column in ("camera", "recorded", "rejected", "parts/s (recent)", "source"):
            table.add_column(column)
        for name, cam in report["cameras"].items():
            source = report["sources"].get(name, {})
            source_state = "ok" if source.get("connected", True) else f"down: {source.get('last_error', '')}"
            rejected = sum(n for k, n in cam.get("counts", {}).items() if k != "pass")
            table.add_row(
                escape(name),
                str(cam.get("recorded")),
                str(rejected),
                f"{cam.get('recent_throughput') or 0:.1f}",
                escape(source_state),
            )
        console.print(table)
    table = _sinks_table("Sinks")
    _sink_rows(table, sinks)
    console.print(table)


def _stored_sink_state(config: Any) -> dict[str, dict[str, Any]]:
    """Cursor, backlog and dead letters of each sink, from the audit store (works with the station down)."""
    from flawscope.audit import AuditLog
    from flawscope.integrate.cursors import CursorStore

    try:
        audit = AuditLog.open(config.station.audit, read_only=True)
    except FlawscopeError as exc:
        err_console.print(f"[yellow]{escape(str(exc))}[/yellow]", soft_wrap=True)
        return {}
    try:
        head = audit.head().seq
        cursors = CursorStore(config.station.audit, synchronous=config.station.audit_synchronous)
        try:
            out = {}
            for sink in config.sinks:
                state = cursors.state(sink.name)
                if state is None:
                    out[sink.name] = {"backlog": "never ran", "last_delivered_seq": "-", "dead_letters": 0}
                    continue
                out[sink.name] = {
                    "backlog": max(0, head - state.seq),
                    "last_delivered_seq": state.seq,
                    "dead_letters": state.dead_letters,
                    "state": "disabled" if state.disabled else "stopped",
                    "last_error": state.disabled,
                }
            return out
        finally:
            cursors.close()
    finally:
        audit.close()


@sink_app.command("replay")
def replay_command(
    name: Annotated[str, typer.Argument(help="The sink's name (its [sink.NAME] table).")],
    from_seq: Annotated[int, typer.Option("--from", help="First record seq to re-send.")],
    config: Annotated[Path, typer.Option("--config", "-c", help="The station's station.toml.")] = Path(
        "station.toml"
    ),
    include_delivered: Annotated[
        bool, typer.Option("--all", help="Also re-send records already delivered (same ids).")
    ] = False,
) -> None:
    """Re-send a sink's dead letters from SEQ on (and re-enable a sink its peer had disabled)."""
    from flawscope.config import load_config
    from flawscope.integrate.replay import replay

    loaded = load_config(config)
    result = replay(loaded, name, from_seq, include_delivered=include_delivered)
    console.print(
        f"sink {escape(name)}: {result.sent} record(s) re-sent, {result.refused} refused again, "
        f"{result.remaining_dead_letters} dead letter(s) left",
        soft_wrap=True,
    )
    if result.stopped:
        err_console.print(f"[red]stopped:[/red] {escape(result.stopped)}", soft_wrap=True)
        raise typer.Exit(1)
