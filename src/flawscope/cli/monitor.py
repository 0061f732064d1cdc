"""``flawscope monitor outcomes``: escape and false-reject rates from operator reviews, against promises."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from flawscope.cli.audit import DEFAULT_AUDIT
from flawscope.cli.common import console
from flawscope.cli.render import kv_table
from flawscope.errors import InputError

monitor_app = typer.Typer(
    help="Watch whether the line still keeps the calibration's promises.", no_args_is_help=True
)


@monitor_app.command("outcomes")
def outcomes_command(
    sample_rate: Annotated[
        float, typer.Option(help="Fraction of passed parts sampled for review (the line's --review-sample).")
    ],
    audit: Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database.")] = DEFAULT_AUDIT,
    bundle: Annotated[
        Path | None,
        typer.Option(help="The deployed bundle: its model's parts only, its calibration's target FRR."),
    ] = None,
    target_frr: Annotated[
        float | None, typer.Option(help="Promised false-reject rate (default: the bundle's).")
    ] = None,
    max_escape: Annotated[
        float | None, typer.Option(help="Escape rate the plant accepts (alarm above it).")
    ] = None,
    station: Annotated[
        str | None, typer.Option(help="Only this station ('station' or 'station/camera').")
    ] = None,
    confidence: Annotated[float, typer.Option(help="Confidence of each interval.")] = 0.95,
    record: Annotated[
        bool, typer.Option(help="Write a warning or alarm into the audit log (the sinks deliver it).")
    ] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
) -> None:
    """Estimate the escape rate (reviewed sample of passes) and the false-reject rate (reviewed rejects)."""
    from flawscope.audit import AuditLog
    from flawscope.monitor.outcomes import describe, outcome_report

    if not 0 < sample_rate <= 1:
        raise InputError("--sample-rate", f"must be in (0, 1], got {sample_rate}")
    if not 0.5 <= confidence < 1:
        raise InputError("--confidence", f"must be in [0.5, 1), got {confidence}")
    model_hash = None
    if bundle is not None:
        from flawscope.bundle import read_bundle

        loaded = read_bundle(bundle)
        model_hash = loaded.model_hash
        active = loaded.manifest.select_thresholds()
        if target_frr is None and active is not None:
            target_frr = active.target_frr
    with AuditLog.open(audit, read_only=not record) as log:
        report = outcome_report(
            log.records(),
            sample_rate=sample_rate,
            target_frr=target_frr,
            max_escape_rate=max_escape,
            confidence=confidence,
            station=station,
            model_hash=model_hash,
        )
        if record:
            _record(log, report, station or "monitor")
    table = kv_table(f"Outcomes from reviews ({report.level})")
    table.add_row("passes / rejects on the line", f"{report.passes} / {report.rejects}")
    table.add_row("sampled passes reviewed", f"{report.sampled_reviewed} of {report.sampled}")
    table.add_row("rejects reviewed", str(report.rejects_reviewed))
    for rate in (report.escape, report.false_reject):
        table.add_row(
            rate.name.replace("_", " "),
            describe(rate).split(": ", 1)[-1] if rate.estimate is not None else "no reviews yet",
        )
        table.add_row("", rate.note)
    console.print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_dict(), indent=2))
    if report.level == "alarm":
        raise typer.Exit(1)


def _record(log: object, report: object, station: str) -> None:
    from flawscope.monitor.alerts import LEVEL_OUTCOMES
    from flawscope.monitor.outcomes import OutcomeReport, describe
    from flawscope.types import InspectionRecord

    assert isinstance(report, OutcomeReport)
    records = [
        InspectionRecord(
            part_id=f"outcomes-{rate.name}",
            station=station,
            acquired_at=time.time(),
            outcome=LEVEL_OUTCOMES[rate.level],
            score=float("nan") if rate.estimate is None else rate.estimate,
            normalized_score=float("nan") if rate.high is None else rate.high,
            category=rate.name,
            source="monitor:reviews",
            reason=f"{rate.level}: {describe(rate)}",
            kind="drift",
        )
        for rate in (report.escape, report.false_reject)
        if rate.level in ("warning", "alarm")
    ]
    if records:
        log.append_many(records)  # type: ignore[attr-defined]
