"""Errors of the audit trail."""

from __future__ import annotations

from flawscope.errors import FlawscopeError


class AuditWriteError(FlawscopeError):
    """A record could not be written to the audit log: the line must stop rather than go on unrecorded.

    Args:
        where: the database URL (without its password).
        problem: a short sentence saying what failed.
    """

    def __init__(self, where: object, problem: str) -> None:
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")
