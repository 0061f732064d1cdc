"""Console helpers shared by the CLI commands: Rich console, progress bars, error exit."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

console = Console(stderr=False)
err_console = Console(stderr=True)

STAGES = {
    "features": "Extracting features",
    "coreset": "Selecting coreset",
    "ivf": "Clustering the search index",
    "predict": "Scoring images",
    "calibration": "Scoring calibration images",
}


# Width used when output goes to a file or a pipe, where Rich would otherwise assume 80 columns
# and cut table cells ("conta…") and wrap file paths mid-name.
PIPE_WIDTH = 200


def setup_logging(verbose: bool) -> None:
    """Route library logging to stderr; warnings by default, info with ``--verbose``.

    On a terminal, Rich draws the log; in a pipe or log file each record is one plain line
    (``WARNING message``), so it can be grepped and is not wrapped mid-path.
    """
    for output in (console, err_console):
        if not output.is_terminal and "COLUMNS" not in os.environ:
            output.width = PIPE_WIDTH
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True)


def unwritable(path: Path) -> str | None:
    """Why ``path`` (a file or folder, existing or not) cannot be written, or None if it can."""
    from flawscope.errors import on_read_only_file_system

    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if on_read_only_file_system(existing):
        return f"{existing} is on a read-only file system"
    if not os.access(existing if existing.is_dir() else existing.parent, os.W_OK | os.X_OK):
        return f"permission denied in {existing}"
    return None


def check_writable(path: Path, what: str = "output") -> None:
    """Refuse, before any work, an output that cannot be written: read-only file system or no permission.

    Args:
        path: the file or folder to be written (it need not exist yet).
        what: what is written there, for the message.

    Raises:
        InputError: naming the path and the cause.
    """
    from flawscope.errors import InputError

    problem = unwritable(path)
    if problem:
        raise InputError(path, f"cannot write the {what}: {problem}")


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A ``(stage, done, total)`` callback drawing one Rich bar per stage.

    The display starts with the first stage, so a command that stops early (a user error) prints
    only its error line, not an empty progress display.
    """
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not tasks:
            progress.start()
        if stage not in tasks:
            tasks[stage] = progress.add_task(STAGES.get(stage, stage), total=total)
        progress.update(tasks[stage], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            progress.stop()
