"""``flawscope audit verify|export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flawscope.cli.common import console
from flawscope.errors import FlawscopeError

audit_app = typer.Typer(help="Verify and export the audit trail.", no_args_is_help=True)
DEFAULT_AUDIT = "sqlite:///flawscope-audit.db"


@audit_app.command("verify")
def audit_verify_command(
    audit: Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database.")] = DEFAULT_AUDIT,
    expected_head: Annotated[
        str | None, typer.Option(help="Published head 'SEQ:HASH' to detect truncation.")
    ] = None,
) -> None:
    """Prove the audit log is intact, or name the first altered record (exit code 1)."""
    from flawscope.audit import AuditLog, ChainHead

    head = None
    if expected_head:
        seq, _, digest = expected_head.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise FlawscopeError(f"--expected-head {expected_head!r}: expected SEQ:SHA256")
        head = ChainHead(int(seq), digest)
    with AuditLog.open(audit, read_only=True) as log:
        result = log.verify(expected_head=head)
        current = log.head()
    if result.ok:
        console.print(
            f"[green]intact[/green]: {result.n_records} records, head {current.seq}:{current.record_hash}"
        )
    else:
        console.print(f"[red]ALTERED[/red]: first bad record seq={result.first_bad_seq}: {result.problem}")
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV or Parquet file to write.")],
    audit: Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database.")] = DEFAULT_AUDIT,
    format: Annotated[
        str | None, typer.Option("--format", help="csv or parquet (default: from the suffix).")
    ] = None,
    since: Annotated[int | None, typer.Option(help="Only records with seq greater than this.")] = None,
) -> None:
    """Export inspection records for MES/BI."""
    from flawscope.audit import AuditLog

    fmt = format or ("parquet" if output.suffix.lower() == ".parquet" else "csv")
    with AuditLog.open(audit, read_only=True) as log:
        count = log.export(output, format=fmt, since=since)
    console.print(f"exported {count} records to {output} ({fmt})")
