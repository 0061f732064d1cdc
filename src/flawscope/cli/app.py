"""The ``flawscope`` command line: one Typer app, one module per command group.

Each command module holds its commands as plain functions; this module is the one place that names
them, so ``flawscope --help`` and this table agree.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.markup import escape

from flawscope import __version__
from flawscope.cli import (
    audit,
    calibrate,
    demo,
    evaluate,
    export,
    feedback,
    improve,
    keys,
    line,
    monitor,
    plcsim,
    reinspect,
    serve,
    station,
    train,
    webscan,
)
from flawscope.cli.common import err_console, setup_logging
from flawscope.cli.usage import ClickException, NoArgsIsHelpError, restyle, usage_error_line
from flawscope.errors import FlawscopeError, os_problem

PROG = "flawscope"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="flawscope: train, evaluate, calibrate, export, inspect, audit, keys, station, sink, serve, demo.",
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    setup_logging(verbose)


app.command("models")(train.models_command)
app.command("train")(train.train_command)
app.command("evaluate")(evaluate.evaluate_command)
app.command("calibrate")(calibrate.calibrate_command)
app.command("export")(export.export_command)
app.command("inspect", epilog=line.SOURCES_HELP)(line.inspect_command)
app.command("reinspect")(reinspect.reinspect_command)
app.command("retrain")(improve.retrain_command)
app.command("demo")(demo.demo_command)
app.command("plc-sim")(plcsim.plcsim_command)
app.add_typer(audit.audit_app, name="audit")
app.add_typer(monitor.monitor_app, name="monitor")
app.add_typer(improve.model_app, name="model")
app.add_typer(station.station_app, name="station")
app.add_typer(station.sink_app, name="sink")
app.command("serve")(serve.serve_command)
app.add_typer(serve.users_app, name="users")
app.add_typer(feedback.feedback_app, name="feedback")
app.add_typer(keys.keys_app, name="keys")
app.add_typer(webscan.webscan_app, name="web-scan")


def _error(message: str) -> None:
    # One line, never wrapped, and the message is text: a path may contain "[...]".
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: every mistake is one ``error:`` line and exit code 2, never a traceback.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    command = restyle(typer.main.get_command(app))
    try:
        code = command.main(args=argv, prog_name=PROG, standalone_mode=False)
    except NoArgsIsHelpError as exc:
        sys.exit(getattr(exc, "exit_code", 2))  # the help page is already printed
    except ClickException as exc:  # usage mistakes: missing argument, bad value, unknown option
        _error(usage_error_line(exc))
        sys.exit(2)
    except typer.Abort:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except FlawscopeError as exc:
        _error(str(exc))
        sys.exit(2)
    except OSError as exc:
        # A file the command had to read or write (a folder that vanished, a full disk): one line
        # naming it, not a traceback; --verbose logs where it happened.
        logging.getLogger("flawscope").debug("file system error", exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{os_problem(exc)}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    if code == 130:
        err_console.print("[yellow]interrupted[/yellow]")
    sys.exit(code if isinstance(code, int) else 0)
