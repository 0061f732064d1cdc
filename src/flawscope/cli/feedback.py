"""``flawscope feedback export``: the reviewed parts as a training dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flawscope.cli.audit import DEFAULT_AUDIT
from flawscope.cli.common import console, err_console
from flawscope.cli.render import kv_table

feedback_app = typer.Typer(help="Turn operators' reviews into training data.", no_args_is_help=True)


@feedback_app.command("export")
def feedback_export_command(
    out: Annotated[Path, typer.Argument(help="Dataset folder to create (MVTec layout).")],
    audit: Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database.")] = DEFAULT_AUDIT,
    images: Annotated[Path, typer.Option(help="The line's image store.")] = Path("images"),
    overwrite: Annotated[bool, typer.Option(help="Replace the folder if it exists.")] = False,
) -> None:
    """Write reviewed parts as train/good, train/<defect type> and ground_truth/<defect type> masks."""
    from flawscope.audit import AuditLog
    from flawscope.errors import InputError
    from flawscope.web.database import WebDB
    from flawscope.web.feedback import export_feedback

    if not images.is_dir():
        raise InputError(images, "image store folder does not exist")
    AuditLog.open(audit, read_only=True).close()  # refuses a database that holds no audit log
    db = WebDB(audit, prepare=False)
    try:
        summary = export_feedback(db, images.resolve(), out, overwrite=overwrite)
    finally:
        db.close()
    table = kv_table(f"Feedback dataset {summary.path}")
    for folder, n in sorted(summary.counts.items()):
        table.add_row(f"train/{folder}", str(n))
    table.add_row("drawn masks", str(summary.masks))
    table.add_row("reviewed parts left out", str(len(summary.skipped)))
    table.add_row("images with disagreeing reviews", str(len(summary.conflicts)))
    console.print(table)
    reasons: dict[str, int] = {}
    for _, why in summary.skipped:
        reasons[why] = reasons.get(why, 0) + 1
    for why, n in sorted(reasons.items()):
        err_console.print(f"  left out {n}: {why}")
    if not summary.counts.get("good"):
        err_console.print("[yellow]no part was reviewed good: train/good is empty[/yellow]")
