"""``flawscope inspect``: run the line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flawscope.cli.audit import DEFAULT_AUDIT
from flawscope.cli.common import console, err_console
from flawscope.cli.render import kv_table
from flawscope.errors import FlawscopeError


def inspect_command(
    bundle: Annotated[Path, typer.Argument(help="Deployable bundle folder (from 'flawscope export').")],
    source: Annotated[
        str,
        typer.Option(
            help="Folder path, watch://DIR, video://FILE, rtsp://, usb://N, gige://ID or sim://DATA."
        ),
    ],
    audit: Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database.")] = DEFAULT_AUDIT,
    store_images: Annotated[Path | None, typer.Option(help="Keep every part's image in this folder.")] = None,
    station: Annotated[str, typer.Option(help="Station name written into every record.")] = "station-1",
    batch_size: Annotated[int, typer.Option(help="Most parts inspected together.")] = 8,
    queue_size: Annotated[int, typer.Option(help="Parts waiting before backpressure applies.")] = 64,
    backpressure: Annotated[
        str, typer.Option(help="'block' the source, or 'drop' (recorded not_inspected).")
    ] = "block",
    int8: Annotated[bool, typer.Option(help="Use the INT8 graph.")] = False,
    review_sample: Annotated[
        float,
        typer.Option(help="Fraction of passed parts sampled for people to review (keeps their maps)."),
    ] = 0.0,
    trusted_keys: Annotated[
        Path | None,
        typer.Option(
            help="Trust store: a public key file or a folder of *.pub; only bundles signed by these keys "
            "load (default: keys made on this machine or trusted with 'flawscope keys trust')."
        ),
    ] = None,
    allow_unsigned: Annotated[
        bool,
        typer.Option(help="Development only: load a bundle without a trusted signature (noted in records)."),
    ] = False,
    monitor: Annotated[
        bool,
        typer.Option(help="Watch for drift against the calibration reference (when the bundle has one)."),
    ] = True,
) -> None:
    """Run the line: acquire, inspect, decide, record (hash-chained audit), publish. Ctrl-C stops cleanly."""
    import signal
    import threading

    from rich.live import Live

    from flawscope.acquire import open_source
    from flawscope.audit import AuditLog
    from flawscope.line import run_line
    from flawscope.runtime import Inspector

    inspector = Inspector.load(bundle, int8=int8, trusted_keys=trusted_keys, allow_unsigned=allow_unsigned)
    if allow_unsigned:
        err_console.print("[yellow]--allow-unsigned: every record of this run says so[/yellow]")
    if inspector.thresholds is None:
        raise FlawscopeError(f"{bundle}: no calibrated thresholds; run 'flawscope calibrate' before export")
    drift = _drift_monitor(inspector) if monitor else None
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        err_console.print(f"[yellow]{signal.Signals(signum).name}: finishing the parts in flight...[/yellow]")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)

    def status_text(summary: Any) -> str:
        counts = " ".join(f"{k}={v}" for k, v in summary.counts.items() if v)
        return (
            f"{summary.station}: {summary.recorded} recorded, {summary.recent_throughput:.1f} parts/s, "
            f"{counts or 'no parts yet'}, queues {dict(summary.queues)}"
        )

    with (
        AuditLog.open(audit) as log,
        open_source(source) as frames,
        Live(console=err_console, transient=True) as live,
    ):
        summary = run_line(
            frames,
            inspector,
            log,
            station=station,
            store_images=store_images,
            batch_size=batch_size,
            queue_size=queue_size,
            backpressure=backpressure,
            review_sample=review_sample,
            stop_event=stop,
            on_status=lambda s: live.update(status_text(s)),
            monitor=drift,
        )
        head = log.head()
    table = kv_table(f"Line summary ({summary.stop_reason})")
    table.add_row("parts recorded", str(summary.recorded))
    for outcome, n in summary.counts.items():
        table.add_row(f"  {outcome}", str(n))
    table.add_row("dropped (recorded not_inspected)", str(summary.dropped))
    table.add_row("missed by the source", str(summary.missed))
    table.add_row("throughput", f"{summary.throughput:.1f} parts/s over {summary.elapsed_s:.1f} s")
    for name, lat in summary.stages.items():
        table.add_row(f"latency {name}", f"mean {lat.mean_ms:.1f} ms, p99 {lat.p99_ms:.1f} ms")
    table.add_row("audit head", f"{head.seq}:{head.record_hash}")
    if drift is not None:
        state = drift.summary()
        worst: dict[str, str] = {}
        for event in state.events:
            if event.level == "alarm" or (event.level == "warning" and event.statistic not in worst):
                worst[event.statistic] = event.level
        moved = ", ".join(f"{name} ({level})" for name, level in sorted(worst.items())) or "nothing moved"
        table.add_row("drift monitor", f"now {state.level}; during the run: {moved}")
    console.print(table)
    if summary.unrecorded:
        raise FlawscopeError(f"{summary.unrecorded} parts could not be recorded: treat them as rejects")


def _drift_monitor(inspector: Any) -> Any:
    """The drift monitor of a bundle whose calibration stored a reference (None otherwise, with a note)."""
    from flawscope.monitor import DriftMonitor, reference_of

    reference = reference_of(inspector.bundle.manifest)
    if reference is None or inspector.thresholds is None:
        err_console.print(
            "[yellow]note: no drift monitoring: the bundle was calibrated without a monitoring reference "
            "(calibrate it again with at least 30 good images)[/yellow]"
        )
        return None
    return DriftMonitor(reference, inspector.thresholds.review)
