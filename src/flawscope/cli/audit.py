"""``flawscope audit verify|head|export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.markup import escape

from flawscope.cli.common import console
from flawscope.errors import FlawscopeError

audit_app = typer.Typer(help="Verify and export the audit trail.", no_args_is_help=True)
DEFAULT_AUDIT = "sqlite:///flawscope-audit.db"
AUDIT_HELP = "Audit database: sqlite:///FILE or postgresql://user@host/db."


@audit_app.command("verify")
def audit_verify_command(
    audit: Annotated[str, typer.Option(metavar="URL", help=AUDIT_HELP)] = DEFAULT_AUDIT,
    expected_head: Annotated[
        str | None,
        typer.Option(
            metavar="SEQ:HASH", help="A head published earlier: detects records removed from the end."
        ),
    ] = None,
    signed_head: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="Head file from 'audit head --sign': detects truncation and recomputed chains.",
        ),
    ] = None,
    trusted_keys: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Public key file or folder of keys that may sign it (default: this machine's).",
        ),
    ] = None,
) -> None:
    """Prove the audit log is intact, or name the first altered record (exit code 1)."""
    from flawscope.audit import AuditLog, ChainHead
    from flawscope.audit.head import read_signed_head
    from flawscope.signing import TrustPolicy

    if expected_head and signed_head:
        raise FlawscopeError("give --expected-head or --signed-head, not both")
    head = None
    if expected_head:
        seq, _, digest = expected_head.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise FlawscopeError(f"--expected-head {expected_head!r}: expected SEQ:SHA256")
        head = ChainHead(int(seq), digest)
    if signed_head:
        head = read_signed_head(signed_head, TrustPolicy.choose(trusted_keys))
    with AuditLog.open(audit, read_only=True) as log:
        result = log.verify(expected_head=head)
        current = log.head()
    if result.ok:
        # The head is copied into shift reports and --expected-head: never wrapped mid-hash.
        console.print(
            f"[green]intact[/green]: {result.n_records} records, head {current.seq}:{current.record_hash}",
            soft_wrap=True,
        )
    else:
        console.print(
            f"[red]ALTERED[/red]: first bad record seq={result.first_bad_seq}: {escape(result.problem)}",
            soft_wrap=True,
        )
        raise typer.Exit(1)


@audit_app.command("head")
def audit_head_command(
    audit: Annotated[str, typer.Option(help="SQLAlchemy URL of the audit database.")] = DEFAULT_AUDIT,
    sign: Annotated[
        bool, typer.Option("--sign", help="Sign the head with your key (made on first use).")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the (signed) head to this JSON file.")
    ] = None,
) -> None:
    """Print the chain's head; with --sign -o FILE, export it signed, to keep outside the database."""
    from flawscope.audit import AuditLog
    from flawscope.audit.head import signed_head, write_signed_head

    if output is not None and not sign:
        raise FlawscopeError("--output writes a signed head: add --sign")
    with AuditLog.open(audit, read_only=True) as log:
        head = log.head()
        url = log.url
    console.print(f"head {head.seq}:{head.record_hash}")
    if sign:
        doc = signed_head(head, url)
        if output is None:
            import json

            console.print(json.dumps(doc, indent=2, sort_keys=True), soft_wrap=True, highlight=False)
        else:
            write_signed_head(output, doc)
            console.print(f"signed by key {doc['signature']['key_id']}: {output} (keep it off this machine)")


@audit_app.command("export")
def audit_export_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="CSV or Parquet file to write.")],
    audit: Annotated[str, typer.Option(metavar="URL", help=AUDIT_HELP)] = DEFAULT_AUDIT,
    format: Annotated[
        Literal["csv", "parquet"] | None,
        typer.Option("--format", help="File format (default: from the suffix, .parquet or else csv)."),
    ] = None,
    since: Annotated[
        int | None, typer.Option(metavar="SEQ", help="Only records with seq greater than this.")
    ] = None,
) -> None:
    """Export inspection records for MES/BI (times as ISO 8601 with the time zone)."""
    from flawscope.audit import AuditLog

    fmt = format or ("parquet" if output.suffix.lower() == ".parquet" else "csv")
    with AuditLog.open(audit, read_only=True) as log:
        count = log.export(output, format=fmt, since=since)
    console.print(f"exported {count} records to {output} ({fmt})")
