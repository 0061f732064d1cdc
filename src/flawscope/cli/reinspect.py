"""``flawscope reinspect``: score an archive of stored images with a (candidate) bundle, locally or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from flawscope.cli.audit import DEFAULT_AUDIT
from flawscope.cli.common import console, err_console
from flawscope.cli.render import kv_table


def reinspect_command(
    archive: Annotated[Path, typer.Argument(help="Folder of stored part images (searched recursively).")],
    bundle: Annotated[Path, typer.Option(help="Deployable bundle to score with (e.g. a candidate model).")],
    engine: Annotated[
        str,
        typer.Option(help="local (this process) or ray (local Ray processes, or the cluster at --address)."),
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address HOST:PORT (with --engine ray).")
    ] = None,
    audit: Annotated[
        str, typer.Option(help="Database URL; results go to its reinspections table.")
    ] = DEFAULT_AUDIT,
    chunk_size: Annotated[int, typer.Option(help="Images per task.")] = 64,
    workers: Annotated[
        int | None, typer.Option(help="CPU slots of a local Ray (default: all cores).")
    ] = None,
    job: Annotated[str | None, typer.Option(help="A name for the job in the results.")] = None,
    trusted_keys: Annotated[
        Path | None,
        typer.Option(help="Trust store for the bundle's signature (default: this machine's trusted keys)."),
    ] = None,
    allow_unsigned: Annotated[
        bool, typer.Option(help="Development only: accept a bundle without a trusted signature.")
    ] = False,
) -> None:
    """Re-score archived images; one result per image, model and thresholds (a re-run resumes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from flawscope.reinspect.run import reinspect

    progress = Progress(
        TextColumn("re-inspecting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )
    task = progress.add_task("reinspect", total=None)
    shown = False

    def update(done: int, found: int) -> None:
        nonlocal shown
        if not shown:  # no bar before the arguments were checked and something was found
            progress.start()
            shown = True
        progress.update(task, completed=done, total=found)

    try:
        summary = reinspect(
            archive,
            bundle,
            audit,
            engine=engine,
            address=address,
            chunk_size=chunk_size,
            workers=workers,
            job=job,
            progress=update,
            trusted_keys=trusted_keys,
            allow_unsigned=allow_unsigned,
        )
    finally:
        if shown:
            progress.stop()
    table = kv_table(f"Re-inspection of {escape(summary.archive)}")
    table.add_row("model", f"{summary.scope.model_version} (thresholds v{summary.scope.threshold_version})")
    table.add_row("images found", str(summary.images))
    table.add_row("already stored (skipped)", str(summary.already_done))
    table.add_row("scored now", f"{summary.scored} ({summary.throughput:.1f} images/s, {summary.engine})")
    for outcome, n in sorted(summary.outcomes.items()):
        label = f"  {outcome}" + (" (unreadable or not scored: a reject)" if outcome == "error" else "")
        table.add_row(label, str(n))
    if summary.ignored:
        table.add_row("non-image files ignored", str(summary.ignored))
    table.add_row("results in", escape(audit))
    console.print(table)
