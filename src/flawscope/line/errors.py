"""Errors of the inspection line."""

from __future__ import annotations

from collections.abc import Sequence

from flawscope.errors import FlawscopeError
from flawscope.line.stats import LineSummary


class LineStopped(FlawscopeError):  # noqa: N818  (the name the CLI and the docs use)
    """The line stopped because results could no longer be recorded safely.

    Attributes:
        reason: what failed (audit log, image store, source, inspector configuration).
        summary: the line's final summary.
        unrecorded: ids of parts taken from the source whose record is NOT in the audit log; they
            were not published, so they must be treated as rejects.
    """

    def __init__(self, reason: str, summary: LineSummary, unrecorded: Sequence[str] = ()) -> None:
        self.reason = reason
        self.summary = summary
        self.unrecorded = tuple(unrecorded)
        message = f"line stopped: {reason}; {summary.recorded} parts recorded"
        if self.unrecorded:
            shown = ", ".join(self.unrecorded[:20]) + (", ..." if len(self.unrecorded) > 20 else "")
            message += f"; {len(self.unrecorded)} parts NOT recorded (treat them as rejects): {shown}"
        super().__init__(message)
