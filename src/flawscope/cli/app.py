"""The ``flawscope`` command line: one Typer app, one module per command group.

Each command module holds its commands as plain functions; this module is the one place that names
them, so ``flawscope --help`` and this table agree.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from flawscope.cli import (
    audit,
    calibrate,
    demo,
    evaluate,
    export,
    feedback,
    keys,
    line,
    plcsim,
    reinspect,
    serve,
    station,
    train,
)
from flawscope.cli.common import err_console, setup_logging
from flawscope.errors import FlawscopeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="flawscope: train, evaluate, calibrate, export, inspect, audit, keys, station, sink, serve, demo.",
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    setup_logging(verbose)


app.command("models")(train.models_command)
app.command("train")(train.train_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("calibrate")(calibrate.calibrate_command)
app.command("export")(export.export_command)
app.command("inspect")(line.inspect_command)
app.command("reinspect")(reinspect.reinspect_command)
app.command("demo")(demo.demo_command)
app.command("plc-sim")(plcsim.plcsim_command)
app.add_typer(audit.audit_app, name="audit")
app.add_typer(station.station_app, name="station")
app.add_typer(station.sink_app, name="sink")
app.command("serve")(serve.serve_command)
app.add_typer(serve.users_app, name="users")
app.add_typer(feedback.feedback_app, name="feedback")
app.add_typer(keys.keys_app, name="keys")


def main() -> None:
    """Console entry point: user errors are one clear line and exit code 2, never a traceback."""
    try:
        app()
    except FlawscopeError as exc:
        # One line, never wrapped, and the message is text: a path may contain "[...]".
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
